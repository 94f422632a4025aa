"""openid-client 6 (a certified OpenID Connect RP) against the live server, through our pages in Chromium."""

from __future__ import annotations

import pytest
from jwcrypto import jwk

from medplum_auth import services
from medplum_auth.models import ClientApplication, Login
from tests.e2e.conftest import POST_LOGOUT_URI

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.mark.spec("OIDC Core 3.1 (code flow), RFC 7636 S256, RFC 9207 iss, OIDC Core 12 refresh, RFC 7009, "
                  "OIDC RP-Initiated Logout 1.0, OIDC Core 3.1.2.6 login_required, RFC 9126 PAR, "
                  "RFC 7591 registration, "
                  "RFC 9449 DPoP")
def test_openid_client_code_flow(seed, run_node, live_gunicorn):
    data = seed()
    _row, registration_token = services.create_registration_token(data.client.project, label="e2e")
    nonce_refusals_before = _nonce_refusals(live_gunicorn)
    out = run_node("oidc.mjs", data, E2E_REGISTRATION_TOKEN=registration_token)
    issuer = live_gunicorn.url
    membership = data.membership

    # Discovery accepted (issuer equality is checked by openid-client) and advertises RFC 9207.
    assert out["issuer"] == issuer
    assert out["metadata"]["authorization_response_iss_parameter_supported"] is True
    assert out["metadata"]["code_challenge_methods_supported"] == ["S256"]

    # The browser saw our sign-in page and then the consent page for the scopes beyond openid.
    steps = out["browser_steps"]
    assert steps[0] == "signin" and "consent" in steps
    assert "consent-scopes:openid profile email offline_access" in steps
    assert {"code", "state", "iss"} <= set(out["callback_params"]) and out["callback_iss"] == issuer

    # authorizationCodeGrant validated the ID token (signature via JWKS, iss, aud, nonce, exp, iat).
    claims = out["id_token_claims"]
    assert claims["iss"] == issuer
    assert claims["aud"] == data.client.client_id
    assert claims["sub"] == str(membership.user_id)
    assert claims["email"] == data.email and claims["given_name"] == "Pat" and claims["family_name"] == "Lee"
    assert out["id_token_header"]["alg"] == "RS256" and out["id_token_header"]["kid"]
    assert out["token_type"].lower() == "bearer" and out["has_refresh_token"]
    assert set(out["scope"].split()) == {"openid", "profile", "email", "offline_access"}
    assert out["access_token_claims"]["client_id"] == data.client.client_id

    # UserInfo passed openid-client's subject check and returns the scope's claims.
    assert out["userinfo"]["sub"] == claims["sub"]
    assert out["userinfo"]["email"] == data.email

    # Refresh rotates both tokens; any new ID token passed validation again for the same subject.
    refresh = out["refresh"]
    assert refresh["new_refresh_token"] and refresh["new_access_token"]
    if refresh["id_token_claims"]:
        assert refresh["id_token_claims"]["sub"] == claims["sub"]
    # Reusing the rotated-out refresh token is refused and revokes the family (RFC 9700 §4.14.2).
    assert refresh["reuse_error"]["error"] == "invalid_grant"
    assert refresh["after_reuse_error"]["error"] == "invalid_grant"

    # prompt=none reuses the server session: no page at all, a fresh code and a valid ID token.
    assert out["silent"]["steps"] == [] and out["silent"]["sub"] == claims["sub"] and out["silent"]["nonce_ok"]

    # RFC 9126: openid-client pushed the request (found through discovery); the browser carried
    # only client_id and request_uri, and the code redeemed validates like any other.
    par = out["par"]
    assert par["endpoint"] == f"{issuer}/oauth2/par"
    assert par["authorize_params"] == ["client_id", "request_uri"]
    assert par["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    assert par["steps"] == [] and par["sub"] == claims["sub"] and par["nonce_ok"]
    assert set(par["scope"].split()) == {"openid", "profile"}

    # RFC 7591: openid-client registered a public client in the seeded project; a pushed code flow
    # with it asked for consent (a new app) and its ID token is for the new client and the same user.
    registration = out["registration"]
    registered = ClientApplication.objects.get(client_id=registration["client_id"])
    assert registered.project_id == data.client.project_id and not registered.is_confidential
    assert registered.registration_source == "dcr" and not registration["has_secret"]
    assert registration["registration_client_uri"] == f"{issuer}/oauth2/register/{registered.client_id}"
    assert registration["has_registration_access_token"]
    assert "consent" in registration["steps"] and "signin" not in registration["steps"]
    assert registration["aud"] == registered.client_id and registration["sub"] == claims["sub"]

    # RFC 9449: every token openid-client got with its DPoP handle is bound to its key (thumbprint by
    # jwcrypto, not the server's code); the pushed request carried the proof, so the browser saw only
    # client_id and request_uri; the server required nonces and openid-client retried with them.
    bound = out["dpop"]
    jkt = jwk.JWK(**bound["public_jwk"]).thumbprint()
    assert bound["algs"] == ["ES256", "ES384", "PS256", "RS256"]
    assert bound["authorize_params"] == ["client_id", "request_uri"]
    assert bound["token_type"] == bound["refreshed_token_type"] == "dpop"  # openid-client lower-cases it
    assert bound["access_token_claims"]["cnf"] == {"jkt": jkt} == bound["refreshed_access_token_claims"]["cnf"]
    dpop_login = Login.objects.get(pk=bound["access_token_claims"]["login_id"])
    assert dpop_login.dpop_jkt == jkt  # a public client's refresh token is bound too
    assert bound["fhir_status"] == 200 and bound["fhir_resource_type"] == "Bundle"
    assert bound["userinfo_sub"] == claims["sub"]
    assert bound["as_bearer_status"] == 401 and 'error="invalid_token"' in bound["as_bearer_challenge"]
    assert bound["as_bearer_challenge"].startswith("DPoP ")
    assert bound["other_key_refresh_error"]["error"] == "invalid_dpop_proof"
    # The nonce round trip happened: the first proof (at PAR) was refused for want of a nonce and
    # retried with the DPoP-Nonce; every later proof carried it (the FHIR API takes the same nonces),
    # so the FHIR read's one 401 is the Bearer attempt.
    refusals = {k: v - nonce_refusals_before[k] for k, v in _nonce_refusals(live_gunicorn).items()}
    assert refusals == {"POST /oauth2/par": 1, "GET /fhir/R4/Patient?_count=1": 1}, refusals

    # RFC 7009 revocation: the revoked refresh token no longer works.
    assert out["revocation"]["after_revoke_error"]["error"] == "invalid_grant"

    # RP-initiated logout with id_token_hint lands on the registered URI with the state; after it,
    # prompt=none answers login_required (openid-client parsed the error redirect, iss included).
    assert out["logout"]["landing"] == f"{POST_LOGOUT_URI}?state={out['logout']['state']}"
    assert out["logout"]["after_logout_error"]["error"] == "login_required"


def _nonce_refusals(server) -> dict[str, int]:
    """Access-log lines of the refusals a missing DPoP nonce causes (gunicorn's format: "request" status)."""
    text = server.log.read_text(errors="replace") if server.log.exists() else ""
    return {"POST /oauth2/par": text.count('"POST /oauth2/par HTTP/1.1" 400'),
            "GET /fhir/R4/Patient?_count=1": text.count('"GET /fhir/R4/Patient?_count=1 HTTP/1.1" 401')}
