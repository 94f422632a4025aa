// @medplum/core MedplumClient with a code from our sign-in page (the README's headless recipe):
// the S256 verifier goes into MemoryStorage under `codeVerifier`, Chromium signs in, then
// processCode(code, {clientId, redirectUri}) → /auth/me → the Patient profile. Then an automatic
// refresh inside an ordinary API call, and signOut() revoking the login.
//
// Env: E2E_ISSUER, E2E_CLIENT_ID, E2E_REDIRECT_URI, E2E_EMAIL, E2E_PASSWORD, E2E_ACCESS_TOKEN_LIFETIME
//      (seconds, the client's short lifetime), E2E_ARTIFACTS, E2E_CHROMIUM.
import {
  browserAuthorize, decodeJwtPayload, env, launchBrowser, limited, log, pkcePair, rawFetch, run,
} from './lib/common.mjs';
import { medplumCore, recordingFetch } from './lib/medplum.mjs';

const { ClientStorage, MedplumClient, MemoryStorage } = medplumCore;

await run(async () => {
  const issuer = env('E2E_ISSUER');
  const clientId = env('E2E_CLIENT_ID');
  const redirectUri = env('E2E_REDIRECT_URI');
  const lifetimeMs = Number(env('E2E_ACCESS_TOKEN_LIFETIME')) * 1000;
  // Refresh when less than this is left: shorter than the token lifetime (else the client loops
  // refreshing), so a token becomes due for refresh lifetimeMs - graceMs after it is issued.
  const graceMs = lifetimeMs - 4000;

  const calls = [];
  const storage = new ClientStorage(new MemoryStorage());
  // Every client call is a time-limited step (lib/common.mjs `limited`).
  const medplum = limited(new MedplumClient({
    baseUrl: `${issuer}/`, clientId, storage, refreshGracePeriod: graceMs, fetch: recordingFetch(calls),
  }), 'medplum');

  const { verifier, challenge } = pkcePair();
  storage.setString('codeVerifier', verifier);
  const state = pkcePair().verifier;
  const authorizeUrl = new URL(medplum.getAuthorizeUrl());
  authorizeUrl.search = new URLSearchParams({
    response_type: 'code', client_id: clientId, redirect_uri: redirectUri, scope: 'openid offline_access',
    state, code_challenge: challenge, code_challenge_method: 'S256',
  }).toString();

  const browser = await launchBrowser();
  let signIn;
  try {
    signIn = await browserAuthorize({ context: await browser.newContext(), authorizeUrl: authorizeUrl.href,
      redirectUri, email: env('E2E_EMAIL'), password: env('E2E_PASSWORD'), shotPrefix: 'medplum-core' });
  } finally {
    await browser.close();
  }
  const callback = new URL(signIn.callbackUrl);
  if (callback.searchParams.get('state') !== state) {
    throw new Error(`state mismatch: ${callback.search}`);
  }
  const code = callback.searchParams.get('code');
  if (!code) throw new Error(`no code in ${callback.search}`);

  const profile = await medplum.processCode(code, { clientId, redirectUri });
  const getProfile = medplum.getProfile();
  const login = medplum.getActiveLogin();
  const firstAccess = medplum.getAccessToken();
  const firstRefresh = login.refreshToken;
  const firstClaims = decodeJwtPayload(firstAccess);
  log('signed in as', profile?.resourceType, profile?.id);

  // Automatic refresh: wait until the token is inside the grace period, then make an ordinary
  // API call; the client refreshes first on its own.
  const due = firstClaims.exp * 1000 - graceMs;
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - Date.now()) + 250));
  const callsBefore = calls.length;
  const me = await medplum.get('auth/me', { cache: 'no-cache' });
  const afterRefresh = medplum.getActiveLogin();
  const secondAccess = medplum.getAccessToken();
  const callsDuring = calls.slice(callsBefore);

  // signOut(): POST /oauth2/logout with the Bearer token, which revokes the login, then the
  // client forgets it. Afterwards the old access and refresh tokens are refused (checked by hand).
  const currentRefresh = afterRefresh.refreshToken;
  const callsBeforeSignOut = calls.length;
  await medplum.signOut();
  const signOutCalls = calls.slice(callsBeforeSignOut);
  const tokenForm = (refreshToken) => ({
    method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', client_id: clientId, refresh_token: refreshToken }),
  });
  const afterSignOut = {
    active_login: medplum.getActiveLogin() ?? null,
    me_with_old_token: await rawFetch(`${issuer}/auth/me`, { headers: { Authorization: `Bearer ${secondAccess}` } }),
    userinfo_with_old_token: await rawFetch(`${issuer}/oauth2/userinfo`,
      { headers: { Authorization: `Bearer ${secondAccess}` } }),
    refresh_with_current_token: await rawFetch(`${issuer}/oauth2/token`, tokenForm(currentRefresh)),
    refresh_with_rotated_out_token: await rawFetch(`${issuer}/oauth2/token`, tokenForm(firstRefresh)),
  };

  return {
    profile,
    get_profile: getProfile ?? null,
    login: { project: login.project, profile: login.profile },
    access_token_claims: firstClaims,
    browser_steps: signIn.steps,
    screenshots: signIn.screenshots,
    refresh: {
      access_token_changed: secondAccess !== firstAccess,
      refresh_token_changed: afterRefresh.refreshToken !== firstRefresh,
      new_exp_later: decodeJwtPayload(secondAccess).exp > firstClaims.exp,
      calls: callsDuring,
      me_profile_id: me.profile?.id,
    },
    sign_out: { calls: signOutCalls, ...afterSignOut },
    calls,
  };
});
