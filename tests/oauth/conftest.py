"""Fixtures for the authorization server: a project with a Patient, clients, PKCE helpers."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from medplum_auth.conf import auth_settings
from tests.factories import DEFAULT_PASSWORD, ClientApplicationFactory, MembershipFactory, ProjectFactory, UserFactory

REDIRECT_URI = "https://app.example.org/callback"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)[:128]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query, keep_blank_values=True).items()}


@pytest.fixture
def oauth_project(db):
    return ProjectFactory(name="Clinic")


@pytest.fixture
def patient(oauth_project):
    user = UserFactory(email="pat@example.org", username="pat@example.org")
    return MembershipFactory(project=oauth_project, user=user, profile_type="Patient", profile_display="Pat Lee")


@pytest.fixture
def public_client(oauth_project):
    return ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=REDIRECT_URI, name="Public app")


@pytest.fixture
def confidential_client(oauth_project):
    return ClientApplicationFactory(project=oauth_project, redirect_uris=REDIRECT_URI, name="Backend app")


def post_form(client: Any, path: str, data: dict[str, Any], **extra: Any):
    """POST ``application/x-www-form-urlencoded``, as OAuth clients do (RFC 6749 §4.1.3)."""
    body = urlencode({k: v for k, v in data.items() if v is not None})
    return client.post(path, body, content_type="application/x-www-form-urlencoded", **extra)


class Flow:
    """Drives the browser side of the code flow with Django's test client."""

    def __init__(self, client: Any, app: Any):
        self.client = client
        self.app = app
        self.verifier, self.challenge = pkce_pair()

    def params(self, **overrides: str) -> dict[str, str]:
        params = {
            "response_type": "code",
            "client_id": self.app.client_id,
            "redirect_uri": REDIRECT_URI,
            "scope": "openid",
            "state": "xyz-state",
            "nonce": "n-0S6_WzA2Mj",
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
        }
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}

    def authorize(self, **overrides: str):
        return self.client.get("/oauth2/authorize", self.params(**overrides))

    def sign_in(self, response, email: str = "pat@example.org", password: str = DEFAULT_PASSWORD):
        assert response.status_code == 302, response.content
        assert response["Location"].startswith("/oauth2/signin?rid="), response["Location"]
        rid = query(response["Location"])["rid"]
        return self.client.post("/oauth2/signin", {"rid": rid, "email": email, "password": password})

    def follow(self, response, approve: bool = True):
        """Follow our own redirects until the response leaves the server (or renders).

        The consent page, when it comes, is approved with every requested scope.
        """
        while response.status_code == 302:
            location = response["Location"]
            if location.startswith("/oauth2/authorize/resume"):
                response = self.client.get(location)
            elif location.startswith("/oauth2/consent") and approve:
                page = self.client.get(location)
                rid = query(location)["rid"]
                scopes = [row["scope"] for row in page.context["rows"]]
                response = self.client.post("/oauth2/consent", {"rid": rid, "action": "allow", "scope": scopes})
            else:
                break
        return response

    def code(self, **overrides: str) -> str:
        response = self.follow(self.sign_in(self.authorize(**overrides)))
        assert response.status_code == 302, response.content
        location = response["Location"]
        assert location.startswith(REDIRECT_URI + "?"), location
        return query(location)["code"]

    def token(self, code: str, **overrides: str):
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                "client_id": self.app.client_id, "code_verifier": self.verifier}
        data.update(overrides)
        return post_form(self.client, "/oauth2/token", data)

    # --- added for the authorization-endpoint tests (tests/oauth/test_authorize.py and friends) ---

    def post_authorize(self, **overrides: str):
        """The same authorization request as :meth:`authorize`, sent as a form POST (OIDC Core §3.1.2.1)."""
        return post_form(self.client, "/oauth2/authorize", self.params(**overrides))

    def redirect(self, **overrides: str) -> str:
        """Sign in (if asked), follow our pages and return the ``Location`` sent back to the client."""
        response = self.authorize(**overrides)
        if response.status_code == 302 and response["Location"].startswith("/oauth2/signin"):
            response = self.sign_in(response)
        response = self.follow(response)
        assert response.status_code == 302, response.content
        return response["Location"]

    def tokens(self, **overrides: str) -> dict[str, Any]:
        """Run the whole flow and redeem the code: the token response body."""
        code = query(self.redirect(**overrides))["code"]
        response = self.token(code)
        assert response.status_code == 200, response.content
        return response.json()


@pytest.fixture
def flow(client, public_client, patient):
    return Flow(client, public_client)


@pytest.fixture
def issuer() -> str:
    return auth_settings.ISSUER


# --- added for the authorization-endpoint tests ---

AUTH_PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    # Nothing to other origins; not "no-referrer", under which browsers send "Origin: null" with
    # our own form POSTs and Django's CSRF check refuses them (see views/decorators.py).
    "Referrer-Policy": "same-origin",
}


def rid(response) -> str:
    """The pending-request id of a redirect to one of our pages (sign-in, profile, consent)."""
    return query(response["Location"])["rid"]


def assert_auth_page_headers(response) -> None:
    """RFC 9700 §4.16 (no framing), §4.2.4 (no cross-origin referrer), no-store caching."""
    for name, value in AUTH_PAGE_HEADERS.items():
        assert response[name] == value, (name, response.get(name))
    assert "no-store" in response["Cache-Control"]


def id_token_claims(id_token: str) -> dict[str, Any]:
    """Claims of an ID token after full verification (signature, kid, typ, iss, exp)."""
    from medplum_auth import tokens

    return tokens.decode(id_token, tokens.ID_TOKEN_TYPE)


def access_token_claims(access_token: str) -> dict[str, Any]:
    from medplum_auth import tokens

    return tokens.verify_access_token(access_token)


# --- added for the token-side tests (token endpoint, client auth, refresh, userinfo, logout,
# --- introspection, revocation, /auth API) ---

def basic_auth(client_id: str, secret: str, scheme: str = "Basic") -> str:
    """An RFC 6749 §2.3.1 ``client_secret_basic`` header: each part form-url-encoded, then base64."""
    from urllib.parse import quote_plus

    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}"
    return f"{scheme} {base64.b64encode(pair.encode()).decode()}"


def assert_no_store(response) -> None:
    """RFC 6749 §5.1: token responses (and their errors) must not be cached."""
    assert response["Cache-Control"] == "no-store", response.get("Cache-Control")
    assert response["Pragma"] == "no-cache", response.get("Pragma")


def assert_oauth_error(response, error: str, status: int = 400, description: str | None = None) -> dict[str, Any]:
    """RFC 6749 §5.2 error body: ``error`` and a non-empty ``error_description``."""
    assert response.status_code == status, (response.status_code, response.content)
    body = response.json()
    assert body["error"] == error, body
    assert body.get("error_description"), body
    if description is not None:
        assert body["error_description"] == description, body
    return body


def verify_jwt(http: Any, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of ``token``, verified with jwcrypto against ``/.well-known/jwks.json``
    (found by ``kid``, algorithm pinned to the published key's ``alg``)."""
    import json

    from jwcrypto import jwk, jws

    keyset = jwk.JWKSet.from_json(http.get("/.well-known/jwks.json").content)
    parsed = jws.JWS()
    parsed.deserialize(token)
    header = parsed.jose_header
    key = keyset.get_key(header["kid"])
    assert key is not None, f"kid {header['kid']} is not published"
    assert header["alg"] == key.get("alg"), header
    parsed.verify(key, alg=key.get("alg"))
    return header, json.loads(parsed.payload)


def token_hash(value: str) -> str:
    """OIDC Core §3.1.3.6 ``at_hash``: left half of SHA-256 (RS256/ES256 keys), base64url, unpadded."""
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def obtain_code(flow: Flow, email: str = "pat@example.org", **overrides: str) -> str:
    """A code from the browser flow, signing in only when the session has no user yet."""
    response = flow.authorize(**overrides)
    if response.status_code == 302 and response["Location"].startswith("/oauth2/signin"):
        response = flow.sign_in(response, email=email)
    response = flow.follow(response)
    assert response.status_code == 302, response.content
    assert response["Location"].startswith(REDIRECT_URI + "?"), response["Location"]
    return query(response["Location"])["code"]


def obtain_tokens(flow: Flow, email: str = "pat@example.org", token_overrides: dict[str, str] | None = None,
                  **overrides: str) -> dict[str, Any]:
    """Run the code flow and redeem the code; the 200 token response body."""
    response = flow.token(obtain_code(flow, email=email, **overrides), **(token_overrides or {}))
    assert response.status_code == 200, response.content
    return response.json()


def login_of(access_token: str):
    """The :class:`~medplum_auth.models.Login` behind an access token (from its ``login_id``)."""
    from medplum_auth import tokens
    from medplum_auth.models import Login

    return Login.objects.get(pk=tokens.verify_access_token(access_token)["login_id"])


def userinfo_status(http: Any, access_token: str) -> int:
    return http.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {access_token}").status_code
