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


@pytest.fixture
def flow(client, public_client, patient):
    return Flow(client, public_client)


@pytest.fixture
def issuer() -> str:
    return auth_settings.ISSUER
