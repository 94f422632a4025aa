"""Pushed authorization requests (RFC 9126): ``/oauth2/par`` and ``request_uri`` at ``/oauth2/authorize``."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from jwcrypto import jwk

from medplum_auth.assertions import ASSERTION_TYPE
from medplum_auth.conf import auth_settings
from medplum_auth.models import Login, PushedAuthorizationRequest
from tests.factories import ClientApplicationFactory
from tests.oauth.conftest import REDIRECT_URI, Flow, basic_auth, post_form, query
from tests.oauth.test_client_auth import make_assertion

PAR = "/oauth2/par"
PREFIX = "urn:ietf:params:oauth:request_uri:"
pytestmark = pytest.mark.spec("RFC 9126")


def push(http, flow: Flow, auth: dict | None = None, **overrides):
    return post_form(http, PAR, flow.params(**overrides), **(auth or {}))


def pushed_uri(http, flow: Flow, auth: dict | None = None, **overrides) -> str:
    response = push(http, flow, auth, **overrides)
    assert response.status_code == 201, response.content
    body = response.json()
    assert response["Cache-Control"] == "no-store"
    assert set(body) == {"request_uri", "expires_in"} and body["expires_in"] == 90
    assert body["request_uri"].startswith(PREFIX) and len(body["request_uri"]) >= len(PREFIX) + 43
    return body["request_uri"]


@pytest.fixture
def flow(client, public_client):
    return Flow(client, public_client)


def test_public_client_pushes_then_signs_in_with_only_client_id_and_request_uri(client, flow, patient):
    request_uri = pushed_uri(client, flow, state="pushed-state", scope="openid profile")
    row = PushedAuthorizationRequest.objects.get()
    # Only a digest of the reference is stored, never the request_uri itself.
    assert row.digest == hashlib.sha256(request_uri[len(PREFIX):].encode()).hexdigest()
    assert row.parameters["state"] == "pushed-state" and row.client_id == flow.app.pk

    response = client.get("/oauth2/authorize", {"client_id": flow.app.client_id, "request_uri": request_uri,
                                                "state": "browser-state", "scope": "openid email"})
    response = flow.follow(flow.sign_in(response))
    location = response["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    assert query(location)["state"] == "pushed-state"  # the pushed parameters only
    assert not PushedAuthorizationRequest.objects.exists()  # used once
    token = flow.token(query(location)["code"])
    assert token.status_code == 200, token.content
    assert set(token.json()["scope"].split()) == {"openid", "profile"}
    assert Login.objects.get().client_id == flow.app.pk


def test_confidential_client_authenticates_with_basic(client, confidential_client, patient):
    flow = Flow(client, confidential_client)
    auth = {"HTTP_AUTHORIZATION": basic_auth(confidential_client.client_id, confidential_client.plaintext_secret)}
    params = flow.params()
    params.pop("client_id")
    response = post_form(client, PAR, params, **auth)
    assert response.status_code == 201, response.content
    assert PushedAuthorizationRequest.objects.get().parameters["client_id"] == confidential_client.client_id
    assert "client_secret" not in PushedAuthorizationRequest.objects.get().parameters


def test_wrong_secret_is_invalid_client_and_nothing_is_stored(client, confidential_client):
    flow = Flow(client, confidential_client)
    response = push(client, flow, {"HTTP_AUTHORIZATION": basic_auth(confidential_client.client_id, "wrong")})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response["WWW-Authenticate"].startswith("Basic ")
    assert not PushedAuthorizationRequest.objects.exists()


@pytest.mark.parametrize("overrides, error, text", [
    ({"redirect_uri": REDIRECT_URI + "/"}, "invalid_request", "Invalid redirect URI"),
    ({"code_challenge_method": "plain"}, "invalid_request", "only S256"),
    ({"response_type": "token"}, "unsupported_response_type", ""),
    ({"scope": "openid superuser"}, "invalid_scope", ""),
    ({"prompt": "sometimes"}, "invalid_request", "Unknown prompt"),
    ({"request_uri": PREFIX + "x"}, "invalid_request", "request_uri cannot be pushed"),
    ({"request": "eyJ.x.y"}, "request_not_supported", ""),
    # PostgreSQL's JSON cannot hold NUL: refused before it is stored, never a 500.
    ({"state": "a\x00b"}, "invalid_request", "NUL"),
    ({"nonce": "\x00"}, "invalid_request", "NUL"),
    ({"login_hint\x00": "x"}, "invalid_request", "NUL"),
])
def test_an_invalid_request_is_refused_at_the_par_endpoint(client, flow, overrides, error, text):
    response = push(client, flow, **overrides)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == error
    assert text in body["error_description"]
    assert not PushedAuthorizationRequest.objects.exists()


def test_a_request_uri_works_once(client, flow, patient):
    request_uri = pushed_uri(client, flow)
    first = client.get("/oauth2/authorize", {"client_id": flow.app.client_id, "request_uri": request_uri})
    assert first.status_code == 302 and first["Location"].startswith("/oauth2/signin")
    again = Client().get("/oauth2/authorize", {"client_id": flow.app.client_id, "request_uri": request_uri})
    assert again.status_code == 400
    assert "request_uri is unknown, expired or already used" in again.content.decode()
    assert "Location" not in again


def test_an_expired_request_uri_is_refused(client, flow):
    request_uri = pushed_uri(client, flow)
    PushedAuthorizationRequest.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get("/oauth2/authorize", {"client_id": flow.app.client_id, "request_uri": request_uri})
    assert response.status_code == 400 and "Location" not in response
    assert "request_uri is unknown, expired or already used" in response.content.decode()


def test_another_clients_request_uri_is_refused_and_burnt(client, flow, oauth_project):
    request_uri = pushed_uri(client, flow)
    other = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris="https://evil.example/cb")
    response = client.get("/oauth2/authorize", {"client_id": other.client_id, "request_uri": request_uri})
    assert response.status_code == 400 and "Location" not in response
    assert not PushedAuthorizationRequest.objects.exists()
    missing = client.get("/oauth2/authorize", {"request_uri": request_uri})
    assert missing.status_code == 400 and "Location" not in missing


@pytest.mark.parametrize("request_uri", [PREFIX + "nope", PREFIX, PREFIX + "x" * 500])
def test_unknown_request_uris_are_refused(client, flow, request_uri):
    response = client.get("/oauth2/authorize", {"client_id": flow.app.client_id, "request_uri": request_uri})
    assert response.status_code == 400 and "Location" not in response


def test_a_client_that_requires_par_refuses_plain_requests(client, flow, patient):
    flow.app.require_pushed_authorization_requests = True
    flow.app.save()
    response = flow.authorize()
    assert response.status_code == 302
    params = query(response["Location"])
    assert response["Location"].startswith(REDIRECT_URI + "?")
    assert params["error"] == "invalid_request" and "PAR" in params["error_description"]
    assert params["state"] == "xyz-state"
    request_uri = pushed_uri(client, flow)
    pushed = client.get("/oauth2/authorize", {"client_id": flow.app.client_id, "request_uri": request_uri})
    assert pushed.status_code == 302 and pushed["Location"].startswith("/oauth2/signin")


def test_the_global_setting_requires_par_and_discovery_says_so(client, flow, settings):
    discovery = client.get("/.well-known/openid-configuration").json()
    assert discovery["pushed_authorization_request_endpoint"].endswith("/oauth2/par")
    assert discovery["require_pushed_authorization_requests"] is False
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "REQUIRE_PUSHED_AUTHORIZATION_REQUESTS": True}
    assert client.get("/.well-known/openid-configuration").json()["require_pushed_authorization_requests"] is True
    assert query(flow.authorize()["Location"])["error"] == "invalid_request"


def test_par_accepts_only_form_posts(client, flow):
    json_body = client.post(PAR, {"client_id": flow.app.client_id}, content_type="application/json")
    assert json_body.status_code == 400 and json_body.json()["error"] == "invalid_request"
    get = client.get(PAR)
    assert get.status_code == 405


@pytest.mark.spec("RFC 9126 §2, RFC 7523 §3")
@pytest.mark.parametrize("audience, status", [
    ("/oauth2/token", 201), ("", 201), ("/oauth2/par", 201),
    ("/oauth2/introspect", 401), ("https://other.example.org/oauth2/par", 401),
])
def test_a_private_key_jwt_client_pushes_with_the_audiences_rfc_9126_names(client, oauth_project, audience, status):
    """RFC 9126 §2: at the PAR endpoint the assertion's aud may be the issuer, token or PAR endpoint."""
    key = jwk.JWK.generate(kty="EC", crv="P-256", kid="par-key", alg="ES256")
    app = ClientApplicationFactory(project=oauth_project, plaintext_secret="", client_secret="",
                                   jwks={"keys": [key.export_public(as_dict=True)]})
    aud = audience if audience.startswith("https://") else auth_settings.ISSUER + audience
    flow = Flow(client, app)
    response = post_form(client, PAR, {**flow.params(), "client_assertion_type": ASSERTION_TYPE,
                                       "client_assertion": make_assertion(key, app.client_id, aud=aud)})
    assert response.status_code == status, response.content
    if status == 201:
        assert PushedAuthorizationRequest.objects.get().client_id == app.pk
    else:
        assert response.json()["error"] == "invalid_client" and not PushedAuthorizationRequest.objects.exists()


def test_a_push_authenticated_as_one_client_cannot_name_another(client, confidential_client, public_client):
    """The body's client_id must be the authenticated client's: no request is stored for either."""
    flow = Flow(client, confidential_client)
    auth = {"HTTP_AUTHORIZATION": basic_auth(confidential_client.client_id, confidential_client.plaintext_secret)}
    response = post_form(client, PAR, {**flow.params(), "client_id": public_client.client_id}, **auth)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert not PushedAuthorizationRequest.objects.exists()
