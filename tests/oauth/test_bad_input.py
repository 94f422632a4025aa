"""Hostile values in every parameter of the OAuth and login endpoints are a 4xx, never a 500: NUL
(PostgreSQL text cannot hold it), very long values, LIKE wildcards, quotes, non-characters."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.oauth.conftest import REDIRECT_URI, basic_auth, pkce_pair, post_form

pytestmark = pytest.mark.django_db

VALUES = ["\x00", "a\x00b", "%", "9" * 5000, "x" * 3000, "\u2028", "'", "\\", "ä", "\uffff"]
TOKEN_FIELDS = ("client_id", "code", "redirect_uri", "code_verifier", "grant_type", "refresh_token", "scope",
                "client_secret", "client_assertion", "client_assertion_type")
AUTHORIZE_FIELDS = ("client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge", "code_challenge_method",
                    "prompt", "max_age", "login_hint", "id_token_hint", "response_type", "aud", "launch")
LOGIN_FIELDS = ("email", "password", "clientId", "projectId", "scope", "nonce", "codeChallenge", "codeChallengeMethod",
                "resourceType")


@pytest.mark.parametrize("value", VALUES, ids=[f"v{n}" for n in range(len(VALUES))])
def test_no_endpoint_fails_on_bad_values(client, public_client, confidential_client, patient, value):
    _, challenge = pkce_pair()
    secret = basic_auth(confidential_client.client_id, confidential_client.plaintext_secret)
    responses: list[tuple[Any, Any]] = []
    for field in TOKEN_FIELDS:
        for grant in ({"grant_type": "authorization_code", "code": "abc", "code_verifier": "v" * 50},
                      {"grant_type": "refresh_token", "refresh_token": "abc"}):
            data = {**grant, "client_id": public_client.client_id, field: value}
            responses.append((("token", field), post_form(client, "/oauth2/token", data)))
    for auth in (basic_auth(value, value), basic_auth(confidential_client.client_id, value)):
        responses.append((("basic",), post_form(client, "/oauth2/token", {"grant_type": "client_credentials"},
                                                HTTP_AUTHORIZATION=auth)))
    for field in AUTHORIZE_FIELDS:
        params = {"response_type": "code", "client_id": public_client.client_id, "redirect_uri": REDIRECT_URI,
                  "scope": "openid", "state": "s", "code_challenge": challenge, "code_challenge_method": "S256",
                  field: value}
        responses.append((("authorize", field), client.get("/oauth2/authorize", params)))
        responses.append((("authorize POST", field), client.post("/oauth2/authorize", params)))
    for field in LOGIN_FIELDS:
        body = {"email": "pat@example.org", "password": "x", "clientId": public_client.client_id,
                "codeChallenge": challenge, "codeChallengeMethod": "S256", field: value}
        responses.append((("auth/login", field),
                          client.post("/auth/login", json.dumps(body), content_type="application/json")))
    responses.append((("auth/profile",), client.post("/auth/profile", json.dumps({"login": value, "profile": value}),
                                                     content_type="application/json")))
    for path in ("/oauth2/userinfo", "/auth/me", "/fhir/R4/Patient", "/oauth2/logout"):
        responses.append(((path,), client.get(path, HTTP_AUTHORIZATION=f"Bearer {value}")))
    for path in ("/oauth2/introspect", "/oauth2/revoke"):
        responses.append(((path,), post_form(client, path, {"token": value, "token_type_hint": value},
                                             HTTP_AUTHORIZATION=secret)))
    responses.append((("logout",), client.get("/oauth2/logout", {"id_token_hint": value, "post_logout_redirect_uri":
                                                                 value, "state": value, "client_id": value})))
    responses.append((("signin",), client.post("/oauth2/signin", {"email": value, "password": value, "rid": value})))
    failed = [(where, response.status_code) for where, response in responses if response.status_code >= 500]
    assert not failed, failed
