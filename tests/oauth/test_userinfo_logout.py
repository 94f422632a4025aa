"""``/oauth2/userinfo`` (OIDC Core §5.3, RFC 6750) and ``/oauth2/logout`` (Medplum's Bearer
logout and OIDC RP-Initiated Logout 1.0)."""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import Client, override_settings
from jwcrypto import jwk, jws

from medplum_auth import tokens
from medplum_auth.conf import auth_settings
from medplum_auth.models import Login
from tests.factories import ClientApplicationFactory
from tests.oauth.conftest import (
    REDIRECT_URI,
    Flow,
    login_of,
    obtain_tokens,
    post_form,
    userinfo_status,
    verify_jwt,
)

LOGGED_OUT_URI = "https://app.example.org/logged-out"


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assert_invalid_token(response) -> None:
    """RFC 6750 §3.1: 401 ``invalid_token`` with a Bearer challenge naming the error."""
    assert response.status_code == 401, response.content
    assert response.json()["error"] == "invalid_token"
    challenge = response["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="'), challenge
    assert 'error="invalid_token"' in challenge


def forge(header: dict[str, Any], claims: dict[str, Any], key: jwk.JWK | None) -> str:
    if key is None:
        return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(key, alg=header["alg"], protected=json.dumps(header))
    return token.serialize(compact=True)


@pytest.fixture
def signed_in(flow) -> dict[str, Any]:
    """Tokens of a code flow whose browser session (``flow.client``) is still signed in."""
    return obtain_tokens(flow, scope="openid profile email fhirUser offline_access")


# --- userinfo -------------------------------------------------------------------------------

@pytest.mark.spec("OIDC Core §5.3.1")
@pytest.mark.spec("RFC 6750 §2.1")
def test_userinfo_get_and_post_with_header(client, signed_in, patient):
    for method in (client.get, client.post):
        response = method("/oauth2/userinfo", **bearer(signed_in["access_token"]))
        assert response.status_code == 200, response.content
        assert response.json()["sub"] == str(patient.user_id)
        assert response["Cache-Control"] == "no-store"


@pytest.mark.spec("RFC 6750 §2.2")
def test_userinfo_post_form_body(client, signed_in, patient):
    response = post_form(client, "/oauth2/userinfo", {"access_token": signed_in["access_token"]})
    assert response.status_code == 200, response.content
    assert response.json()["sub"] == str(patient.user_id)


@pytest.mark.spec("RFC 9700 §4.3.2")
def test_userinfo_refuses_tokens_in_the_query(client, signed_in):
    response = client.get("/oauth2/userinfo", {"access_token": signed_in["access_token"]})
    assert response.status_code == 401


@pytest.mark.spec("RFC 6750 §3")
@pytest.mark.parametrize("headers", [{}, {"HTTP_AUTHORIZATION": "Bearer"}, {"HTTP_AUTHORIZATION": "Bearer   "},
                                     {"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"}])
def test_userinfo_without_a_token(client, db, headers):
    response = client.get("/oauth2/userinfo", **headers)
    assert response.status_code == 401
    challenge = response["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="'), challenge
    assert "error=" not in challenge  # RFC 6750 §3.1: no error code when no credentials were sent


@pytest.mark.spec("RFC 8725 §2.8")
@pytest.mark.spec("RFC 8725 §3.11")
@pytest.mark.parametrize("which", ["id_token", "refresh_token"])
def test_id_and_refresh_tokens_are_not_access_tokens(client, signed_in, which):
    assert_invalid_token(client.get("/oauth2/userinfo", **bearer(signed_in[which])))


FORGERIES = ["foreign key, our kid", "foreign key and kid", "alg none", "alg none without kid",
             "HS256 keyed with our public key", "tampered claims", "signed by us, typ JWT", "not a JWT"]


@functools.lru_cache(maxsize=1)
def foreign_key() -> jwk.JWK:
    return jwk.JWK.generate(kty="RSA", size=2048, kid="foreign", alg="RS256")


def forgeries(http: Any, real: str) -> dict[str, str]:
    """Tokens that look like ``real`` (same claims) but were not signed by us as access tokens."""
    header, claims = verify_jwt(http, real)
    ours = jwk.JWKSet.from_json(http.get("/.well-known/jwks.json").content).get_key(header["kid"])
    foreign = foreign_key()
    hmac_key = jwk.JWK(kty="oct", k=b64url(ours.export_to_pem()))
    head, _payload, signature = real.split(".")
    return {
        "foreign key, our kid": forge(header, claims, foreign),
        "foreign key and kid": forge({**header, "kid": "foreign"}, claims, foreign),
        "alg none": forge({"alg": "none", "typ": "at+jwt", "kid": header["kid"]}, claims, None),
        "alg none without kid": forge({"alg": "none", "typ": "at+jwt"}, claims, None),
        "HS256 keyed with our public key": forge({**header, "alg": "HS256"}, claims, hmac_key),
        "tampered claims": f"{head}.{b64url(json.dumps({**claims, 'sub': 'someone'}).encode())}.{signature}",
        "signed by us, typ JWT": tokens.sign(claims, tokens.ID_TOKEN_TYPE),  # RFC 8725 §3.11: typ is checked
        "not a JWT": "opaque-token",
    }


@pytest.mark.spec("RFC 8725 §3.1")
@pytest.mark.spec("RFC 8725 §2.1")
@pytest.mark.parametrize("case", FORGERIES)
def test_forged_tokens_are_refused(client, signed_in, case):
    forged = forgeries(client, signed_in["access_token"])[case]
    assert_invalid_token(client.get("/oauth2/userinfo", **bearer(forged)))


@pytest.mark.spec("RFC 6750 §3.1")
def test_expired_access_token(client, signed_in, patient):
    login = login_of(signed_in["access_token"])
    expired = tokens.issue_access_token(subject=str(patient.user_id), client_id=login.client.client_id,
                                        login_id=str(login.pk), scope="openid", profile=patient.profile,
                                        lifetime=-(tokens.CLOCK_SKEW + 60))
    assert_invalid_token(client.get("/oauth2/userinfo", **bearer(expired)))
    assert userinfo_status(client, signed_in["access_token"]) == 200


def test_access_token_from_another_issuer(client, signed_in, patient):
    login = login_of(signed_in["access_token"])
    with override_settings(MEDPLUM_AUTH={**django_settings.MEDPLUM_AUTH, "ISSUER": "https://other.example.org"}):
        other = tokens.issue_access_token(subject=str(patient.user_id), client_id=login.client.client_id,
                                          login_id=str(login.pk), scope="openid", profile=None, lifetime=60)
    assert_invalid_token(client.get("/oauth2/userinfo", **bearer(other)))


@pytest.mark.spec("RFC 7009 §2")
def test_revoked_login(client, signed_in):
    Login.objects.update(revoked_at="2020-01-01T00:00:00Z")
    assert_invalid_token(client.get("/oauth2/userinfo", **bearer(signed_in["access_token"])))


def test_inactive_membership_or_user(client, signed_in, patient):
    patient.active = False
    patient.save()
    assert_invalid_token(client.get("/oauth2/userinfo", **bearer(signed_in["access_token"])))


@pytest.mark.spec("OIDC Core §5.4")
@pytest.mark.parametrize("scope, present, absent", [
    ("openid", {"sub"}, {"name", "email", "fhirUser", "given_name"}),
    ("openid profile", {"sub", "name", "given_name", "family_name", "preferred_username", "profile"},
     {"email", "fhirUser"}),
    ("openid email", {"sub", "email", "email_verified"}, {"name", "fhirUser"}),
    ("openid fhirUser", {"sub", "fhirUser"}, {"name", "email"}),
])
def test_userinfo_claims_by_scope(client, flow, patient, scope, present, absent):
    body = obtain_tokens(flow, scope=scope)
    claims = client.get("/oauth2/userinfo", **bearer(body["access_token"])).json()
    assert present <= set(claims), claims
    assert not absent & set(claims), claims
    user = patient.user
    expected = {
        "sub": str(patient.user_id),
        "name": f"{user.first_name} {user.last_name}",
        "given_name": user.first_name,
        "family_name": user.last_name,
        "preferred_username": "pat@example.org",
        "profile": f"Patient/{patient.profile_id}",
        "email": "pat@example.org",
        "email_verified": False,
        "fhirUser": f"{auth_settings.fhir_base_url}/Patient/{patient.profile_id}",
    }
    for name in present:
        assert claims[name] == expected[name], name


def test_userinfo_for_a_client_credentials_token(client, confidential_client):
    response = post_form(client, "/oauth2/token", {"grant_type": "client_credentials",
                                                   "client_id": confidential_client.client_id,
                                                   "client_secret": confidential_client.plaintext_secret})
    info = client.get("/oauth2/userinfo", **bearer(response.json()["access_token"]))
    assert info.status_code == 200
    assert info.json() == {"sub": confidential_client.client_id}


# --- logout: Medplum style -------------------------------------------------------------------

def test_medplum_logout(client, signed_in):
    """``@medplum/core`` ``signOut()``: POST ``{}`` as application/fhir+json with the Bearer token."""
    assert "_auth_user_id" in client.session
    response = client.post("/oauth2/logout", "{}", content_type="application/fhir+json",
                           **bearer(signed_in["access_token"]))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "information"
    login = login_of(signed_in["access_token"])
    assert login.revoked_at is not None and login.revoked_reason == "logout"
    assert userinfo_status(client, signed_in["access_token"]) == 401
    refresh = post_form(client, "/oauth2/token", {"grant_type": "refresh_token", "client_id": login.client.client_id,
                                                  "refresh_token": signed_in["refresh_token"]})
    assert refresh.json()["error"] == "invalid_grant"
    assert "_auth_user_id" not in client.session  # the browser session ended too


@pytest.mark.spec("RFC 9110 §15.5.6")
@pytest.mark.parametrize("method", ["put", "delete", "patch", "trace"])
def test_logout_answers_only_get_and_post(client, signed_in, method):
    """Issue 13 (schemathesis): any method signed out, e.g. TRACE with the Bearer token was a 200."""
    response = client.generic(method.upper(), "/oauth2/logout", **bearer(signed_in["access_token"]))
    assert response.status_code == 405 and response["Allow"] == "GET, POST, OPTIONS", response.status_code
    assert login_of(signed_in["access_token"]).revoked_at is None
    assert client.options("/oauth2/logout")["Allow"] == "GET, POST, OPTIONS"


def test_medplum_logout_leaves_another_users_session(client, signed_in):
    other_browser = Client()
    response = other_browser.post("/oauth2/logout", "{}", content_type="application/json",
                                  **bearer(signed_in["access_token"]))
    assert response.status_code == 200
    assert userinfo_status(client, signed_in["access_token"]) == 401
    assert "_auth_user_id" in client.session  # only the token's login was revoked


@pytest.mark.parametrize("header", ["Bearer not-a-token", "Bearer", "Basic dXNlcjpwYXNz"])
def test_medplum_logout_needs_a_valid_token(client, signed_in, header):
    response = client.post("/oauth2/logout", "{}", content_type="application/json", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer ")
    assert login_of(signed_in["access_token"]).revoked_at is None


# --- logout: OIDC RP-Initiated Logout ---------------------------------------------------------

@pytest.fixture
def rp_client(oauth_project):
    return ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=REDIRECT_URI,
                                    post_logout_redirect_uris=LOGGED_OUT_URI, name="RP")


@pytest.fixture
def rp(client, rp_client, patient) -> dict[str, Any]:
    return obtain_tokens(Flow(client, rp_client), scope="openid offline_access")


@pytest.mark.spec("OIDC RP-Initiated Logout 1.0 §2")
@pytest.mark.spec("OIDC RP-Initiated Logout 1.0 §3")
@pytest.mark.parametrize("method", ["get", "post"])
def test_rp_initiated_logout(client, rp, method):
    params = {"id_token_hint": rp["id_token"], "post_logout_redirect_uri": LOGGED_OUT_URI, "state": "st-1"}
    response = client.get("/oauth2/logout", params) if method == "get" else post_form(client, "/oauth2/logout",
                                                                                       params)
    assert response.status_code == 302, response.content
    assert response["Location"] == f"{LOGGED_OUT_URI}?state=st-1"
    assert "_auth_user_id" not in client.session
    login = login_of(rp["access_token"])
    assert login.revoked_at is not None and login.revoked_reason == "rp_logout"
    assert userinfo_status(client, rp["access_token"]) == 401


def test_rp_initiated_logout_without_state_or_redirect(client, rp):
    params = {"id_token_hint": rp["id_token"], "post_logout_redirect_uri": LOGGED_OUT_URI}
    assert client.get("/oauth2/logout", params)["Location"] == LOGGED_OUT_URI
    client2 = Client()
    tokens2 = obtain_tokens(Flow(client2, login_of(rp["access_token"]).client))
    page = client2.get("/oauth2/logout", {"id_token_hint": tokens2["id_token"]})
    assert page.status_code == 200
    assert page.templates[0].name == "medplum_auth/logged_out.html"
    assert "_auth_user_id" not in client2.session


@pytest.mark.spec("OIDC RP-Initiated Logout 1.0 §3")
@pytest.mark.parametrize("uri", ["https://evil.example.org/", LOGGED_OUT_URI + "/x", REDIRECT_URI])
def test_unregistered_post_logout_redirect_uri(client, rp, uri):
    response = client.get("/oauth2/logout", {"id_token_hint": rp["id_token"], "post_logout_redirect_uri": uri,
                                             "state": "s"})
    assert response.status_code == 400
    assert not response.has_header("Location")
    assert b"post_logout_redirect_uri is not registered" in response.content
    assert login_of(rp["access_token"]).revoked_at is None
    assert "_auth_user_id" in client.session


def test_id_token_hint_for_another_client(client, rp, oauth_project):
    other = ClientApplicationFactory(project=oauth_project, post_logout_redirect_uris=LOGGED_OUT_URI)
    response = client.get("/oauth2/logout", {"id_token_hint": rp["id_token"], "client_id": other.client_id,
                                             "post_logout_redirect_uri": LOGGED_OUT_URI})
    assert response.status_code == 400
    assert not response.has_header("Location")
    assert login_of(rp["access_token"]).revoked_at is None


@pytest.mark.parametrize("hint", ["garbage", "a.b.c"])
def test_invalid_id_token_hint(client, rp, hint):
    response = client.get("/oauth2/logout", {"id_token_hint": hint, "post_logout_redirect_uri": LOGGED_OUT_URI})
    assert response.status_code == 400
    assert not response.has_header("Location")
    assert "_auth_user_id" in client.session


@pytest.mark.spec("OIDC RP-Initiated Logout 1.0 §2")
def test_access_token_as_id_token_hint_is_refused(client, rp):
    response = client.get("/oauth2/logout", {"id_token_hint": rp["access_token"],
                                             "post_logout_redirect_uri": LOGGED_OUT_URI})
    assert response.status_code == 400
    assert login_of(rp["access_token"]).revoked_at is None


@pytest.mark.spec("OIDC RP-Initiated Logout 1.0 §2")
@pytest.mark.spec("RFC 6749 §10.12")
def test_logout_without_hint_asks_and_needs_csrf(client, rp, rp_client):
    browser = Client(enforce_csrf_checks=True)
    browser.cookies = client.cookies
    params = {"client_id": rp_client.client_id, "post_logout_redirect_uri": LOGGED_OUT_URI, "state": "s2"}
    page = browser.get("/oauth2/logout", params)
    assert page.status_code == 200
    assert b"Sign out?" in page.content and b"csrfmiddlewaretoken" in page.content
    assert page["X-Frame-Options"] == "DENY"
    assert "_auth_user_id" in browser.session  # asking does not log out

    forged = post_form(browser, "/oauth2/logout", params)
    assert forged.status_code == 403
    assert "_auth_user_id" in browser.session

    token = page.context["csrf_token"]
    confirmed = post_form(browser, "/oauth2/logout", {**params, "csrfmiddlewaretoken": str(token)})
    assert confirmed.status_code == 302, confirmed.content
    assert confirmed["Location"] == f"{LOGGED_OUT_URI}?state=s2"
    assert "_auth_user_id" not in browser.session
    # No id_token_hint: the session ends, but which login to revoke is unknown.
    assert login_of(rp["access_token"]).revoked_at is None

