// openid-client 6 (a certified OpenID Connect relying party) against the live server:
// discovery, authorization code + PKCE S256 + state + nonce through our sign-in and consent pages
// in headless Chromium, full ID token validation (iss, aud, nonce, exp, signature via JWKS, RFC 9207
// iss), UserInfo, refresh, revocation, prompt=none with the browser session, a pushed authorization
// request (RFC 9126), dynamic client registration (RFC 7591) and sign-in with that client,
// DPoP-bound tokens (RFC 9449, with server nonces) through PAR, code, refresh, a FHIR read and
// UserInfo, RP-initiated logout.
//
// Env: E2E_ISSUER, E2E_CLIENT_ID, E2E_REGISTRATION_TOKEN, E2E_REDIRECT_URI, E2E_POST_LOGOUT_URI, E2E_EMAIL, E2E_PASSWORD,
//      E2E_ARTIFACTS (screenshots), E2E_CHROMIUM.
import * as openid from 'openid-client';

import { browserAuthorize, decodeJwtPayload, env, launchBrowser, limited, log, run } from './lib/common.mjs';

// Every openid-client call is a time-limited step.
const client = limited(openid, 'openid-client');

async function expectOAuthError(promise) {
  try {
    await promise;
  } catch (err) {
    return { name: err.name, code: err.code, error: err.error, status: err.status,
             error_description: err.error_description };
  }
  throw new Error('expected an OAuth error, the call succeeded');
}

await run(async () => {
  const issuer = env('E2E_ISSUER');
  const clientId = env('E2E_CLIENT_ID');
  const redirectUri = env('E2E_REDIRECT_URI');
  const postLogoutUri = env('E2E_POST_LOGOUT_URI');
  const email = env('E2E_EMAIL');
  const password = env('E2E_PASSWORD');

  // The issuer is http://127.0.0.1:<port>: openid-client refuses plain HTTP unless told, and that
  // is the only check relaxed here.
  const config = await client.discovery(new URL(issuer), clientId, { redirect_uris: [redirectUri] },
    openid.None(), { execute: [openid.allowInsecureRequests] });
  const metadata = config.serverMetadata();
  log('discovered', metadata.issuer);

  const browser = await launchBrowser();
  try {
    const context = await browser.newContext();

    // 1. Code flow with PKCE S256, state and nonce; consent for the scopes beyond openid.
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const scope = 'openid profile email offline_access';
    const authorizeUrl = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri, scope, state, nonce,
      code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    });
    const first = await browserAuthorize({ context, authorizeUrl: authorizeUrl.href, redirectUri, email, password,
                                           shotPrefix: 'openid-client' });
    const callbackParams = Object.fromEntries(new URL(first.callbackUrl).searchParams);
    const tokens = await client.authorizationCodeGrant(config, new URL(first.callbackUrl), {
      pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true,
    });
    const claims = tokens.claims();
    log('id token claims', claims);

    // 2. UserInfo, with the subject check against the ID token.
    const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);

    // 3. Refresh (rotation): a new refresh token; a new ID token, if any, validated again.
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
    const refreshedClaims = refreshed.claims?.();
    // The rotated-out refresh token is refused: reuse revokes the whole token family.
    const reuse = await expectOAuthError(client.refreshTokenGrant(config, tokens.refresh_token));
    const afterReuse = await expectOAuthError(client.refreshTokenGrant(config, refreshed.refresh_token));

    // 4. prompt=none with the browser's session at the server: no page, a code straight away.
    const verifier2 = client.randomPKCECodeVerifier();
    const state2 = client.randomState();
    const nonce2 = client.randomNonce();
    const silentUrl = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri, scope, state: state2, nonce: nonce2, prompt: 'none',
      code_challenge: await client.calculatePKCECodeChallenge(verifier2), code_challenge_method: 'S256',
    });
    const silent = await browserAuthorize({ context, authorizeUrl: silentUrl.href, redirectUri, email, password,
                                            expectSignIn: false });
    const silentTokens = await client.authorizationCodeGrant(config, new URL(silent.callbackUrl), {
      pkceCodeVerifier: verifier2, expectedState: state2, expectedNonce: nonce2, idTokenExpected: true,
    });
    const silentClaims = silentTokens.claims();

    // 4b. Pushed authorization request (RFC 9126): openid-client posts the parameters to the PAR
    // endpoint; the browser carries only client_id and request_uri. The session answers at once.
    const verifierPar = client.randomPKCECodeVerifier();
    const statePar = client.randomState();
    const noncePar = client.randomNonce();
    const parUrl = await client.buildAuthorizationUrlWithPAR(config, {
      redirect_uri: redirectUri, scope: 'openid profile', state: statePar, nonce: noncePar, prompt: 'none',
      code_challenge: await client.calculatePKCECodeChallenge(verifierPar), code_challenge_method: 'S256',
    });
    const pushed = await browserAuthorize({ context, authorizeUrl: parUrl.href, redirectUri, email, password,
                                            expectSignIn: false });
    const parTokens = await client.authorizationCodeGrant(config, new URL(pushed.callbackUrl), {
      pkceCodeVerifier: verifierPar, expectedState: statePar, expectedNonce: noncePar, idTokenExpected: true,
    });
    const parClaims = parTokens.claims();

    // 4c. Dynamic client registration (RFC 7591) with the project's initial access token, then a
    // code flow (pushed, as above) with the new public client: it asks for consent, its first time.
    const registered = await client.dynamicClientRegistration(new URL(issuer), {
      client_name: 'Registered by openid-client', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none',
    }, openid.None(), { initialAccessToken: env('E2E_REGISTRATION_TOKEN'), execute: [openid.allowInsecureRequests] });
    const registeredMetadata = registered.clientMetadata();
    const verifierDcr = client.randomPKCECodeVerifier();
    const stateDcr = client.randomState();
    const nonceDcr = client.randomNonce();
    const dcrUrl = await client.buildAuthorizationUrlWithPAR(registered, {
      redirect_uri: redirectUri, scope: 'openid profile', state: stateDcr, nonce: nonceDcr,
      code_challenge: await client.calculatePKCECodeChallenge(verifierDcr), code_challenge_method: 'S256',
    });
    const dcrBrowser = await browserAuthorize({ context, authorizeUrl: dcrUrl.href, redirectUri, email, password,
                                                expectSignIn: false });
    const dcrTokens = await client.authorizationCodeGrant(registered, new URL(dcrBrowser.callbackUrl), {
      pkceCodeVerifier: verifierDcr, expectedState: stateDcr, expectedNonce: nonceDcr, idTokenExpected: true,
    });
    const dcrClaims = dcrTokens.claims();

    // 4d. DPoP (RFC 9449): a key pair of the client's; the pushed request carries a proof (which
    // binds the code), the code exchange, the refresh and the FHIR read each their own. The server
    // requires nonces: openid-client takes the DPoP-Nonce from the use_dpop_nonce error and retries.
    const dpopKeys = await client.randomDPoPKeyPair('ES256');
    const DPoP = client.getDPoPHandle(config, dpopKeys);
    const verifierDpop = client.randomPKCECodeVerifier();
    const stateDpop = client.randomState();
    const dpopUrl = await client.buildAuthorizationUrlWithPAR(config, {
      redirect_uri: redirectUri, scope: 'openid offline_access', state: stateDpop, prompt: 'none',
      code_challenge: await client.calculatePKCECodeChallenge(verifierDpop), code_challenge_method: 'S256',
    }, { DPoP });
    const dpopBrowser = await browserAuthorize({ context, authorizeUrl: dpopUrl.href, redirectUri, email, password,
                                                 expectSignIn: false });
    const dpopTokens = await client.authorizationCodeGrant(config, new URL(dpopBrowser.callbackUrl), {
      pkceCodeVerifier: verifierDpop, expectedState: stateDpop,
    }, undefined, { DPoP });
    const dpopRefreshed = await client.refreshTokenGrant(config, dpopTokens.refresh_token, undefined, { DPoP });
    const fhirUrl = new URL(`${issuer}/fhir/R4/Patient?_count=1`);
    const fhirRead = await client.fetchProtectedResource(config, dpopRefreshed.access_token, fhirUrl, 'GET',
                                                         undefined, undefined, { DPoP });
    const fhirBody = await fhirRead.json();
    const dpopUserinfo = await client.fetchUserInfo(config, dpopRefreshed.access_token, openid.skipSubjectCheck,
                                                    { DPoP });
    // The same token as a plain Bearer token, and the refresh token without its key: refused.
    const asBearer = await fetch(fhirUrl, { headers: { Authorization: `Bearer ${dpopRefreshed.access_token}` } });
    const otherDPoP = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'));
    const otherKeyRefresh = await expectOAuthError(
      client.refreshTokenGrant(config, dpopRefreshed.refresh_token, undefined, { DPoP: otherDPoP }));

    // 5. Revocation (RFC 7009) of the refresh token; then refresh fails with invalid_grant.
    await client.tokenRevocation(config, silentTokens.refresh_token);
    const afterRevoke = await expectOAuthError(client.refreshTokenGrant(config, silentTokens.refresh_token));

    // 6. RP-initiated logout in the browser, then prompt=none must answer login_required.
    const logoutState = client.randomState();
    const endSession = client.buildEndSessionUrl(config, {
      id_token_hint: silentTokens.id_token, post_logout_redirect_uri: postLogoutUri, state: logoutState,
    });
    const logoutPage = await context.newPage();
    let logoutLanding;
    logoutPage.on('request', (request) => {
      if (request.url().startsWith(postLogoutUri)) logoutLanding = request.url();
    });
    await logoutPage.goto(endSession.href).catch((err) => { if (!logoutLanding) throw err; });
    await logoutPage.close();
    const state3 = client.randomState();
    const verifier3 = client.randomPKCECodeVerifier();
    const afterLogoutUrl = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri, scope: 'openid', state: state3, prompt: 'none',
      code_challenge: await client.calculatePKCECodeChallenge(verifier3), code_challenge_method: 'S256',
    });
    const afterLogout = await browserAuthorize({ context, authorizeUrl: afterLogoutUrl.href, redirectUri, email,
                                                 password, expectSignIn: false });
    const loginRequired = await expectOAuthError(client.authorizationCodeGrant(
      config, new URL(afterLogout.callbackUrl), { pkceCodeVerifier: verifier3, expectedState: state3 }));

    return {
      issuer: metadata.issuer,
      metadata: {
        authorization_response_iss_parameter_supported: metadata.authorization_response_iss_parameter_supported,
        code_challenge_methods_supported: metadata.code_challenge_methods_supported,
        end_session_endpoint: metadata.end_session_endpoint,
      },
      browser_steps: first.steps,
      screenshots: first.screenshots,
      callback_params: Object.keys(callbackParams).sort(),
      callback_iss: callbackParams.iss,
      token_type: tokens.token_type,
      scope: tokens.scope,
      expires_in: tokens.expires_in,
      has_refresh_token: Boolean(tokens.refresh_token),
      id_token_header: JSON.parse(Buffer.from(tokens.id_token.split('.')[0], 'base64url').toString()),
      id_token_claims: claims,
      access_token_claims: decodeJwtPayload(tokens.access_token),
      userinfo,
      refresh: {
        new_refresh_token: Boolean(refreshed.refresh_token) && refreshed.refresh_token !== tokens.refresh_token,
        new_access_token: refreshed.access_token !== tokens.access_token,
        id_token_claims: refreshedClaims ?? null,
        reuse_error: reuse,
        after_reuse_error: afterReuse,
      },
      silent: { steps: silent.steps, sub: silentClaims.sub, nonce_ok: silentClaims.nonce === nonce2 },
      par: {
        endpoint: metadata.pushed_authorization_request_endpoint,
        authorize_params: [...parUrl.searchParams.keys()].sort(),
        request_uri: parUrl.searchParams.get('request_uri'),
        steps: pushed.steps, sub: parClaims.sub, nonce_ok: parClaims.nonce === noncePar, scope: parTokens.scope,
      },
      registration: {
        client_id: registeredMetadata.client_id,
        has_secret: Boolean(registeredMetadata.client_secret),
        registration_client_uri: registeredMetadata.registration_client_uri,
        has_registration_access_token: Boolean(registeredMetadata.registration_access_token),
        steps: dcrBrowser.steps, aud: dcrClaims.aud, sub: dcrClaims.sub,
      },
      dpop: {
        algs: metadata.dpop_signing_alg_values_supported,
        authorize_params: [...dpopUrl.searchParams.keys()].sort(),
        token_type: dpopTokens.token_type, refreshed_token_type: dpopRefreshed.token_type,
        access_token_claims: decodeJwtPayload(dpopTokens.access_token),
        refreshed_access_token_claims: decodeJwtPayload(dpopRefreshed.access_token),
        public_jwk: await crypto.subtle.exportKey('jwk', dpopKeys.publicKey),
        fhir_status: fhirRead.status, fhir_resource_type: fhirBody.resourceType,
        userinfo_sub: dpopUserinfo.sub,
        as_bearer_status: asBearer.status, as_bearer_challenge: asBearer.headers.get('www-authenticate'),
        other_key_refresh_error: otherKeyRefresh,
      },
      revocation: { after_revoke_error: afterRevoke },
      logout: { landing: logoutLanding ?? null, state: logoutState, after_logout_error: loginRequired },
    };
  } finally {
    await browser.close();
  }
});
