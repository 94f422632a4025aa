"""The OpenID Foundation Basic OP certification plan, ported to the test client.

One test per module of ``oidcc-basic-certification-test-plan`` (conformance-suite
``OIDCCBasicTestPlan``), named after the module id, plus the Config OP module and the
comprehensive-plan modules that apply to a static client (redirect URI and key-rotation
checks). As in the suite: ``response_type=code``, a confidential client authenticating with
``client_secret_basic`` (one module with ``client_secret_post``), no PKCE except in the PKCE
module, so the client is registered with ``pkce_optional``. Every ID token goes through the
suite's standard checks (:func:`standard_id_token_checks`).

Not ported: ``oidcc-idtoken-unsigned`` (needs dynamic registration) and
``oidcc-ensure-request-object-with-redirect-uri`` (request objects are not supported, which the
two ``*-request-*-rejected-as-unsupported`` modules check).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.test import Client, override_settings
from django.utils import timezone
from jwcrypto import jwk, jws

from medplum_auth import authorization
from medplum_auth.models import ClientApplication, Login
from medplum_auth.services import rotate_signing_keys
from tests.factories import ClientApplicationFactory
from tests.oauth.conftest import REDIRECT_URI, Flow, pkce_pair, post_form, query

PLAN = "OIDF oidcc-basic-certification-test-plan: "



class RP:
    """The conformance suite's relying party: a confidential client, fresh state and nonce per request."""

    def __init__(self, client: Client, app: ClientApplication):
        self.client = client
        self.app = app
        self.flow = Flow(client, app)
        self.nonce = ""
        self.state = ""

    def params(self, **overrides: str | None) -> dict[str, str]:
        self.nonce, self.state = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
        params: dict[str, str | None] = {
            "response_type": "code", "client_id": self.app.client_id, "redirect_uri": REDIRECT_URI,
            "scope": "openid", "state": self.state, "nonce": self.nonce,
        }
        params.update(overrides)
        if params.get("nonce") is None:
            self.nonce = ""
        return {k: v for k, v in params.items() if v is not None}

    def authorize(self, **overrides: str | None):
        return self.client.get("/oauth2/authorize", self.params(**overrides))

    def complete(self, response, email: str = "pat@example.org"):
        """Sign in if asked, approve every page, and return the final redirect to the client."""
        if response.status_code == 302 and response["Location"].startswith("/oauth2/signin"):
            response = self.flow.sign_in(response, email=email)
        response = self.flow.follow(response)
        assert response.status_code == 302, response.content
        assert response["Location"].startswith(REDIRECT_URI + "?"), response["Location"]
        return response

    def code(self, **overrides: str | None) -> str:
        params = query(self.complete(self.authorize(**overrides))["Location"])
        assert params["state"] == self.state
        assert params["iss"] == self.issuer
        return params["code"]

    @property
    def issuer(self) -> str:
        return self.client.get("/.well-known/openid-configuration").json()["issuer"]

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.app.client_id}:{self.app.plaintext_secret}".encode()).decode()

    def token(self, code: str, post_auth: bool = False, **extra: str):
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, **extra}
        if post_auth:
            data.update(client_id=self.app.client_id, client_secret=self.app.plaintext_secret)
            return post_form(self.client, "/oauth2/token", data)
        return post_form(self.client, "/oauth2/token", data, HTTP_AUTHORIZATION=self.basic())

    def tokens(self, **overrides: str | None) -> dict[str, Any]:
        response = self.token(self.code(**overrides))
        assert response.status_code == 200, response.content
        body = response.json()
        standard_id_token_checks(self, body)
        return body


@pytest.fixture
def rp(client, oauth_project, patient) -> RP:
    app = ClientApplicationFactory(project=oauth_project, redirect_uris=REDIRECT_URI, name="Conformance RP",
                                   pkce_optional=True)
    return RP(client, app)


def verify_with_jwks(client: Client, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, verified with jwcrypto against the published JWK Set by ``kid``."""
    parsed = jws.JWS()
    parsed.deserialize(token)
    header = parsed.jose_header
    assert isinstance(header.get("kid"), str) and header["kid"], header
    keyset = jwk.JWKSet.from_json(client.get("/.well-known/jwks.json").content)
    key = keyset.get_key(header["kid"])
    assert key is not None, "kid not published"
    assert header["alg"] == key.get("alg")
    parsed.verify(key, alg=header["alg"])
    return header, json.loads(parsed.payload)


def half_hash(value: str) -> str:
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def standard_id_token_checks(rp: RP, body: dict[str, Any]) -> dict[str, Any]:
    """The suite's ``PerformStandardIdTokenChecks`` (OIDC Core §3.1.3.7, §2, §5.1)."""
    assert body["token_type"] == "Bearer"
    header, claims = verify_with_jwks(rp.client, body["id_token"])
    now = time.time()
    assert header["alg"] == "RS256"  # the default when the client asked for no algorithm
    assert claims["iss"] == rp.issuer
    assert claims["aud"] == rp.app.client_id or rp.app.client_id in claims["aud"]
    assert isinstance(claims["sub"], str) and 0 < len(claims["sub"]) <= 255
    assert claims["exp"] > now
    assert claims["iat"] <= now + 5
    assert isinstance(claims["auth_time"], int) and claims["auth_time"] <= now + 5
    if rp.nonce:
        assert claims["nonce"] == rp.nonce
    else:
        assert "nonce" not in claims
    if "at_hash" in claims:
        assert claims["at_hash"] == half_hash(body["access_token"])
    assert claims["acr"] == "pwd" and claims["amr"] == ["pwd"]  # one of acr_values_supported; RFC 8176 amr
    for name in ("name", "given_name", "family_name", "email", "preferred_username"):
        assert name not in claims or isinstance(claims[name], str)
    if "email_verified" in claims:
        assert isinstance(claims["email_verified"], bool)
    return claims


def id_claims(rp: RP, body: dict[str, Any]) -> dict[str, Any]:
    return verify_with_jwks(rp.client, body["id_token"])[1]


def assert_error_response(rp: RP, response, errors: set[str]) -> dict[str, str]:
    """Authorization error response checks: state echoed, iss, no code, a clean description."""
    assert response.status_code == 302
    assert response["Location"].startswith(REDIRECT_URI + "?")
    params = query(response["Location"])
    assert params["error"] in errors, params
    assert params["state"] == rp.state
    assert params["iss"] == rp.issuer
    assert "code" not in params
    assert not set(params.get("error_description", "")) & {"\r", "\n", "\t"}
    assert set(params) <= {"error", "error_description", "error_uri", "state", "iss"}
    return params


def assert_error_page(response) -> None:
    assert response.status_code == 400
    assert not response.has_header("Location")
    assert response["Content-Type"].startswith("text/html")


def backdate_sign_in(client: Client, seconds: float) -> None:
    session = client.session
    session[authorization.AUTH_TIME_KEY] -= seconds
    session.save()


# --- the Basic OP plan ------------------------------------------------------------------------------


@pytest.mark.spec(PLAN + "oidcc-server")
def test_oidcc_server(rp):
    body = rp.tokens()
    info = rp.client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert info.status_code == 200
    assert info.json()["sub"] == id_claims(rp, body)["sub"]


@pytest.mark.spec(PLAN + "oidcc-response-type-missing")
def test_oidcc_response_type_missing(rp):
    response = rp.authorize(response_type=None)
    assert_error_response(rp, response, {"unsupported_response_type", "invalid_request"})
    assert not Login.objects.exists()


@pytest.mark.spec(PLAN + "oidcc-idtoken-signature")
def test_oidcc_idtoken_signature(rp):
    body = rp.tokens()
    header, _claims = verify_with_jwks(rp.client, body["id_token"])
    assert header["alg"] == "RS256"
    assert header["typ"] == "JWT"
    assert header["kid"] in {key["kid"] for key in rp.client.get("/.well-known/jwks.json").json()["keys"]}
    # A flipped signature byte fails verification.
    head, payload, signature = body["id_token"].split(".")
    tampered = f"{head}.{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    with pytest.raises(jws.InvalidJWSSignature):
        verify_with_jwks(rp.client, tampered)


@pytest.mark.spec(PLAN + "oidcc-userinfo-get")
def test_oidcc_userinfo_get(rp):
    body = rp.tokens(scope="openid email")
    info = rp.client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert info.status_code == 200
    assert info.json() == {"sub": id_claims(rp, body)["sub"], "email": "pat@example.org", "email_verified": False}


@pytest.mark.spec(PLAN + "oidcc-userinfo-post-header")
def test_oidcc_userinfo_post_header(rp):
    body = rp.tokens()
    info = rp.client.post("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert info.status_code == 200
    assert info.json()["sub"] == id_claims(rp, body)["sub"]


@pytest.mark.spec(PLAN + "oidcc-userinfo-post-body")
def test_oidcc_userinfo_post_body(rp):
    body = rp.tokens()
    info = post_form(rp.client, "/oauth2/userinfo", {"access_token": body["access_token"]})
    assert info.status_code == 200
    assert info.json()["sub"] == id_claims(rp, body)["sub"]


@pytest.mark.spec(PLAN + "oidcc-ensure-request-without-nonce-succeeds-for-code-flow")
def test_oidcc_ensure_request_without_nonce_succeeds_for_code_flow(rp):
    body = rp.tokens(nonce=None)
    assert "nonce" not in id_claims(rp, body)


@pytest.mark.spec(PLAN + "oidcc-scope-profile")
def test_oidcc_scope_profile(rp, patient):
    body = rp.tokens(scope="openid profile")
    info = rp.client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}").json()
    user = patient.user
    assert info["name"] == f"{user.first_name} {user.last_name}"
    assert info["given_name"] == user.first_name
    assert info["family_name"] == user.last_name
    assert info["preferred_username"] == user.username
    assert "email" not in info


@pytest.mark.spec(PLAN + "oidcc-scope-email")
def test_oidcc_scope_email(rp):
    body = rp.tokens(scope="openid email")
    info = rp.client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}").json()
    assert info["email"] == "pat@example.org"
    assert info["email_verified"] is False
    assert "name" not in info


@pytest.mark.spec(PLAN + "oidcc-scope-address")
def test_oidcc_scope_address(rp):
    """No address is stored: the request must still succeed (the suite only warns)."""
    body = rp.tokens(scope="openid address")
    assert body["scope"] == "openid address"
    info = rp.client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert info.status_code == 200


@pytest.mark.spec(PLAN + "oidcc-scope-phone")
def test_oidcc_scope_phone(rp):
    body = rp.tokens(scope="openid phone")
    assert body["scope"] == "openid phone"
    info = rp.client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert info.status_code == 200


@pytest.mark.spec(PLAN + "oidcc-scope-all")
def test_oidcc_scope_all(rp):
    body = rp.tokens(scope="openid profile email address phone")
    info = rp.client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}").json()
    assert {"sub", "name", "email"} <= set(info)


@pytest.mark.spec(PLAN + "oidcc-alternate-happy-flow")
def test_oidcc_alternate_happy_flow(rp):
    params = rp.params(scope="email profile openid")
    reordered = dict(reversed(list(params.items())))
    response = rp.client.get("/oauth2/authorize?" + urlencode(reordered))
    code = query(rp.complete(response)["Location"])["code"]
    body = rp.token(code).json()
    standard_id_token_checks(rp, body)
    assert set(body["scope"].split()) == {"openid", "profile", "email"}


@pytest.mark.spec(PLAN + "oidcc-display-page")
def test_oidcc_display_page(rp):
    response = rp.authorize(display="page")
    assert rp.client.get(response["Location"]).status_code == 200
    assert query(rp.complete(response)["Location"])["code"]


@pytest.mark.spec(PLAN + "oidcc-display-popup")
def test_oidcc_display_popup(rp):
    response = rp.authorize(display="popup")
    assert rp.client.get(response["Location"]).status_code == 200
    assert query(rp.complete(response)["Location"])["code"]


@pytest.mark.spec(PLAN + "oidcc-prompt-login")
def test_oidcc_prompt_login(rp):
    rp.tokens()
    backdate_sign_in(rp.client, 100)  # the suite's two logins are some time apart
    first = id_claims(rp, rp.tokens(prompt="none"))
    response = rp.authorize(prompt="login")
    assert response["Location"].startswith("/oauth2/signin?rid=")  # re-login forced despite the session
    second = rp.token(query(rp.complete(response)["Location"])["code"]).json()
    claims = standard_id_token_checks(rp, second)
    assert claims["sub"] == first["sub"]
    assert claims["auth_time"] >= first["auth_time"] + 99


@pytest.mark.spec(PLAN + "oidcc-prompt-none-not-logged-in")
def test_oidcc_prompt_none_not_logged_in(rp):
    response = rp.authorize(prompt="none")
    assert_error_response(rp, response, {"login_required", "interaction_required", "consent_required",
                                         "account_selection_required"})


@pytest.mark.spec(PLAN + "oidcc-prompt-none-logged-in")
def test_oidcc_prompt_none_logged_in(rp):
    first = id_claims(rp, rp.tokens())
    response = rp.authorize(prompt="none")
    assert response["Location"].startswith(REDIRECT_URI + "?")  # no UI at all
    params = query(response["Location"])
    assert params["state"] == rp.state
    body = rp.token(params["code"]).json()
    claims = standard_id_token_checks(rp, body)
    assert claims["sub"] == first["sub"]
    assert claims["auth_time"] == first["auth_time"]


@pytest.mark.spec(PLAN + "oidcc-max-age-1")
def test_oidcc_max_age_1(rp):
    rp.tokens()
    backdate_sign_in(rp.client, 100)  # instead of sleeping: the sign-in is older than one second
    first = id_claims(rp, rp.tokens(prompt="none"))
    response = rp.authorize(max_age="1")
    assert response["Location"].startswith("/oauth2/signin?rid="), response["Location"]
    body = rp.token(query(rp.complete(response)["Location"])["code"]).json()
    claims = standard_id_token_checks(rp, body)
    assert claims["sub"] == first["sub"]
    assert claims["auth_time"] >= first["auth_time"] + 99
    assert abs(claims["auth_time"] - time.time()) < 5


@pytest.mark.spec(PLAN + "oidcc-max-age-10000")
def test_oidcc_max_age_10000(rp):
    first = id_claims(rp, rp.tokens())
    response = rp.authorize(max_age="10000")
    assert response["Location"].startswith(REDIRECT_URI + "?")  # no re-login
    claims = standard_id_token_checks(rp, rp.token(query(response["Location"])["code"]).json())
    assert claims["sub"] == first["sub"]
    assert claims["auth_time"] == first["auth_time"]


@pytest.mark.spec(PLAN + "oidcc-ensure-request-with-unknown-parameter-succeeds")
def test_oidcc_ensure_request_with_unknown_parameter_succeeds(rp):
    rp.tokens(extra="foobar")


@pytest.mark.spec(PLAN + "oidcc-id-token-hint")
def test_oidcc_id_token_hint(rp):
    first = rp.tokens()
    response = rp.authorize(prompt="none", id_token_hint=first["id_token"])
    assert response["Location"].startswith(REDIRECT_URI + "?"), response["Location"]
    claims = standard_id_token_checks(rp, rp.token(query(response["Location"])["code"]).json())
    assert claims["sub"] == id_claims(rp, first)["sub"]


@pytest.mark.spec(PLAN + "oidcc-login-hint")
def test_oidcc_login_hint(rp):
    response = rp.authorize(login_hint="pat@example.org")
    page = rp.client.get(response["Location"])
    assert 'value="pat@example.org"' in page.content.decode()
    assert query(rp.complete(response)["Location"])["code"]


@pytest.mark.spec(PLAN + "oidcc-ui-locales")
def test_oidcc_ui_locales(rp):
    response = rp.authorize(ui_locales="se")
    assert rp.client.get(response["Location"]).status_code == 200
    assert query(rp.complete(response)["Location"])["code"]


@pytest.mark.spec(PLAN + "oidcc-claims-locales")
def test_oidcc_claims_locales(rp):
    rp.tokens(claims_locales="se")


@pytest.mark.spec(PLAN + "oidcc-ensure-request-with-acr-values-succeeds")
def test_oidcc_ensure_request_with_acr_values_succeeds(rp):
    rp.tokens(acr_values="1 2")


@pytest.mark.spec(PLAN + "oidcc-codereuse")
def test_oidcc_codereuse(rp):
    code = rp.code()
    assert rp.token(code).status_code == 200
    replay = rp.token(code)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"


@pytest.mark.spec(PLAN + "oidcc-codereuse-30seconds")
def test_oidcc_codereuse_30seconds(rp, monkeypatch):
    code = rp.code()
    first = rp.token(code).json()
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(seconds=30))
    replay = rp.token(code)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    # The suite warns unless the tokens of the first redemption were revoked (RFC 6749 §4.1.2).
    info = rp.client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {first['access_token']}")
    assert info.status_code == 401


@pytest.mark.spec(PLAN + "oidcc-ensure-registered-redirect-uri")
def test_oidcc_ensure_registered_redirect_uri(rp):
    assert_error_page(rp.authorize(redirect_uri="https://app.example.org/callback/unregistered"))
    assert not Login.objects.exists()


@pytest.mark.spec(PLAN + "oidcc-ensure-post-request-succeeds")
def test_oidcc_ensure_post_request_succeeds(rp):
    response = post_form(rp.client, "/oauth2/authorize", rp.params())
    assert response["Location"].startswith("/oauth2/signin?rid=")
    body = rp.token(query(rp.complete(response)["Location"])["code"]).json()
    standard_id_token_checks(rp, body)


@pytest.mark.spec(PLAN + "oidcc-server-client-secret-post")
def test_oidcc_server_client_secret_post(rp):
    response = rp.token(rp.code(), post_auth=True)
    assert response.status_code == 200, response.content
    standard_id_token_checks(rp, response.json())


@pytest.mark.spec(PLAN + "oidcc-request-uri-unsigned-supported-correctly-or-rejected-as-unsupported")
def test_oidcc_request_uri_unsigned_supported_correctly_or_rejected_as_unsupported(rp):
    metadata = rp.client.get("/.well-known/openid-configuration").json()
    assert metadata["request_uri_parameter_supported"] is False
    assert "none" not in metadata.get("request_object_signing_alg_values_supported", [])
    response = rp.authorize(request_uri="https://rp.example.org/request.jwt")
    assert_error_response(rp, response, {"request_uri_not_supported"})


@pytest.mark.spec(PLAN + "oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported")
def test_oidcc_unsigned_request_object_supported_correctly_or_rejected_as_unsupported(rp):
    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    request_object = f"{b64({'alg': 'none'})}.{b64({'scope': 'openid email', 'state': 'inner'})}."
    response = rp.authorize(request=request_object)
    params = assert_error_response(rp, response, {"request_not_supported"})
    assert params["state"] == rp.state  # the object was not read, only refused
    assert not Login.objects.exists()


@pytest.mark.spec(PLAN + "oidcc-claims-essential")
def test_oidcc_claims_essential(rp):
    body = rp.tokens(scope="openid profile", claims=json.dumps({"userinfo": {"name": {"essential": True}}}))
    info = rp.client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}").json()
    assert info["name"]


@pytest.mark.spec(PLAN + "oidcc-refresh-token")
def test_oidcc_refresh_token(rp, oauth_project):
    first = rp.tokens(scope="openid offline_access")
    assert first["refresh_token"]
    response = post_form(rp.client, "/oauth2/token", {"grant_type": "refresh_token",
                                                      "refresh_token": first["refresh_token"]},
                         HTTP_AUTHORIZATION=rp.basic())
    assert response.status_code == 200, response.content
    refreshed = response.json()
    assert refreshed["refresh_token"] != first["refresh_token"]
    claims = verify_with_jwks(rp.client, refreshed["id_token"])[1]
    assert claims["sub"] == id_claims(rp, first)["sub"]
    assert claims["aud"] == rp.app.client_id
    # Bound to the client: another client cannot use it.
    other = ClientApplicationFactory(project=oauth_project)
    stolen = post_form(rp.client, "/oauth2/token", {"grant_type": "refresh_token",
                                                    "refresh_token": refreshed["refresh_token"]},
                       HTTP_AUTHORIZATION=RP(rp.client, other).basic())
    assert stolen.status_code == 400
    assert stolen.json()["error"] == "invalid_grant"


@pytest.mark.spec(PLAN + "oidcc-ensure-request-with-valid-pkce-succeeds")
def test_oidcc_ensure_request_with_valid_pkce_succeeds(rp):
    verifier, challenge = pkce_pair()
    code = rp.code(code_challenge=challenge, code_challenge_method="S256")
    response = rp.token(code, code_verifier=verifier)
    assert response.status_code == 200, response.content
    standard_id_token_checks(rp, response.json())


# --- Config OP plan -------------------------------------------------------------------------------


@pytest.mark.spec("OIDF oidcc-config-certification-test-plan: oidcc-discovery-endpoint-verification")
@override_settings(MEDPLUM_AUTH={**settings.MEDPLUM_AUTH, "ISSUER": "https://auth.example.org"})
def test_oidcc_discovery_endpoint_verification(client, db):
    response = client.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    data = response.json()
    assert data["issuer"] + "/.well-known/openid-configuration" == "https://auth.example.org/.well-known/" \
                                                                   "openid-configuration"
    for field in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "response_types_supported",
                  "subject_types_supported", "id_token_signing_alg_values_supported"):
        assert data[field], field
    assert "userinfo_endpoint" in data
    for field in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint"):
        assert urlsplit(data[field]).scheme == "https", field
    assert "code" in data["response_types_supported"]
    assert "RS256" in data["id_token_signing_alg_values_supported"]
    assert "openid" in data["scopes_supported"]
    assert set(data["subject_types_supported"]) <= {"public", "pairwise"}
    assert "authorization_code" in data["grant_types_supported"]
    assert isinstance(data["code_challenge_methods_supported"], list)
    assert isinstance(data["claims_supported"], list)


# --- comprehensive-plan modules that apply to a static client ---------------------------------------------


@pytest.mark.spec("OIDF oidcc-test-plan: oidcc-ensure-redirect-uri-in-authorization-request")
def test_oidcc_ensure_redirect_uri_in_authorization_request(rp):
    rp.app.redirect_uris = f"{REDIRECT_URI}\nhttps://app.example.org/second"
    rp.app.save()
    response = rp.authorize(redirect_uri=None)
    assert_error_page(response)
    assert "Missing redirect URI" in response.content.decode()


@pytest.mark.spec("OIDF oidcc-test-plan: oidcc-redirect-uri-query-ok")
def test_oidcc_redirect_uri_query_ok(client, oauth_project, patient):
    uri = "https://app.example.org/callback?foo=bar"
    app = ClientApplicationFactory(project=oauth_project, redirect_uris=uri, pkce_optional=True)
    rp = RP(client, app)
    response = rp.authorize(redirect_uri=uri)
    response = rp.flow.follow(rp.flow.sign_in(response))
    location = response["Location"]
    assert location.startswith("https://app.example.org/callback?foo=bar&")
    params = query(location)
    assert params["foo"] == "bar"
    token = post_form(client, "/oauth2/token", {"grant_type": "authorization_code", "code": params["code"],
                                                "redirect_uri": uri}, HTTP_AUTHORIZATION=rp.basic())
    assert token.status_code == 200, token.content


@pytest.mark.spec("OIDF oidcc-test-plan: oidcc-redirect-uri-query-added")
def test_oidcc_redirect_uri_query_added(client, oauth_project, patient):
    app = ClientApplicationFactory(project=oauth_project, redirect_uris="https://app.example.org/callback?foo=bar")
    response = RP(client, app).authorize(redirect_uri="https://app.example.org/callback?foo=bar&bar=foo")
    assert_error_page(response)


@pytest.mark.spec("OIDF oidcc-test-plan: oidcc-redirect-uri-query-mismatch")
def test_oidcc_redirect_uri_query_mismatch(client, oauth_project, patient):
    app = ClientApplicationFactory(project=oauth_project, redirect_uris="https://app.example.org/callback?foo=bar")
    response = RP(client, app).authorize(redirect_uri="https://app.example.org/callback?foo=baz")
    assert_error_page(response)


@pytest.mark.spec("OIDF oidcc-test-plan: oidcc-redirect-uri-regfrag")
def test_oidcc_redirect_uri_regfrag(rp, oauth_project):
    candidate = ClientApplication(project=oauth_project, name="frag", redirect_uris=REDIRECT_URI + "#frag")
    with pytest.raises(ValidationError) as exc:
        candidate.full_clean()
    assert "redirect_uris" in exc.value.message_dict
    assert_error_page(rp.authorize(redirect_uri=REDIRECT_URI + "#frag"))


@pytest.mark.spec("OIDF oidcc-test-plan: oidcc-server-rotate-keys")
def test_oidcc_server_rotate_keys(rp):
    before = rp.tokens()
    old_kid = verify_with_jwks(rp.client, before["id_token"])[0]["kid"]
    new = rotate_signing_keys()
    after = rp.tokens()
    header, _claims = verify_with_jwks(rp.client, after["id_token"])
    assert header["kid"] == new.kid != old_kid
    verify_with_jwks(rp.client, before["id_token"])  # the old key is still published
