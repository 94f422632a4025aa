"""Dynamic client registration (RFC 7591) and client configuration (RFC 7592) at ``/oauth2/register``."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from jwcrypto import jwk

from medplum_auth import services
from medplum_auth.models import ClientApplication, RegistrationToken, SecurityEvent
from tests.factories import AccessPolicyFactory, ProjectFactory
from tests.oauth.conftest import REDIRECT_URI, Flow, basic_auth, post_form

REGISTER = "/oauth2/register"
PRIVATE_KEY = jwk.JWK.generate(kty="EC", crv="P-256", kid="registered", alg="ES256")
pytestmark = pytest.mark.spec("RFC 7591, RFC 7592")


def register(http, metadata, token: str | None = None):
    extra = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return http.post(REGISTER, json.dumps(metadata), content_type="application/json", **extra)


@pytest.fixture
def initial(oauth_project):
    _row, token = services.create_registration_token(oauth_project, label="partner onboarding")
    return token


def test_registered_public_client_signs_in_with_the_code_flow(client, oauth_project, initial, patient):
    response = register(client, {"client_name": "Registered app", "redirect_uris": [REDIRECT_URI],
                                  "token_endpoint_auth_method": "none", "extra_field": "ignored"}, initial)
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert "client_secret" not in body
    assert body["client_name"] == "Registered app" and body["redirect_uris"] == [REDIRECT_URI]
    assert body["grant_types"] == ["authorization_code"] and body["response_types"] == ["code"]
    assert body["registration_client_uri"].endswith(f"/oauth2/register/{body['client_id']}")
    assert "extra_field" not in body
    created = ClientApplication.objects.get(client_id=body["client_id"])
    assert created.project == oauth_project and not created.is_confidential
    assert created.registration_source == "dcr"
    assert created.registration_access_digest == hashlib.sha256(body["registration_access_token"].encode()).hexdigest()
    assert SecurityEvent.objects.filter(event_type="client.created", subject=created.reference).exists()

    tokens = Flow(client, created).tokens()
    assert tokens["token_type"] == "Bearer" and tokens["project"]["reference"] == f"Project/{oauth_project.pk}"


def test_registered_confidential_client_gets_a_secret_and_the_tokens_policy(client, oauth_project):
    policy = AccessPolicyFactory(project=oauth_project)
    _row, token = services.create_registration_token(oauth_project, access_policy=policy)
    response = register(client, {"client_name": "Backend", "grant_types": ["client_credentials"],
                                  "response_types": []}, token)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["client_secret_expires_at"] == 0 and body["token_endpoint_auth_method"] == "client_secret_basic"
    created = ClientApplication.objects.get(client_id=body["client_id"])
    assert created.is_confidential and created.access_policy == policy
    issued = post_form(client, "/oauth2/token", {"grant_type": "client_credentials"},
                       HTTP_AUTHORIZATION=basic_auth(body["client_id"], body["client_secret"]))
    assert issued.status_code == 200, issued.content


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_registration_needs_a_valid_initial_access_token(client, oauth_project, token):
    response = register(client, {"redirect_uris": [REDIRECT_URI]}, token)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert not ClientApplication.objects.exists()


def test_revoked_and_expired_tokens_register_nothing(client, oauth_project):
    revoked, revoked_token = services.create_registration_token(oauth_project)
    services.revoke_registration_token(revoked)
    expired, expired_token = services.create_registration_token(oauth_project, lifetime_days=1)
    RegistrationToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    for token in (revoked_token, expired_token):
        response = register(client, {"redirect_uris": [REDIRECT_URI]}, token)
        assert response.status_code == 401 and response.json()["error"] == "invalid_token"
    assert not ClientApplication.objects.exists()
    assert SecurityEvent.objects.filter(event_type="registration_token.revoked").count() == 1


@pytest.mark.parametrize("value", ["Clinic", "6f1c2a0e-8f0b-4d7e-9a51-3b2b0c9d1e77"])
def test_open_registration_naming_no_project_needs_a_token(client, oauth_project, settings, value):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "OPEN_CLIENT_REGISTRATION": value}
    response = register(client, {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"
    assert not ClientApplication.objects.exists()


def test_open_registration_setting_names_the_project(client, oauth_project, settings):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "OPEN_CLIENT_REGISTRATION": str(oauth_project.pk)}
    response = register(client, {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"})
    assert response.status_code == 201, response.content
    assert ClientApplication.objects.get().project == oauth_project


@pytest.mark.parametrize("metadata, error, text", [
    ({"redirect_uris": ["https://app.example.org/cb#frag"]}, "invalid_redirect_uri", "fragment"),
    ({"redirect_uris": ["http://app.example.org/cb"]}, "invalid_redirect_uri", "https"),
    ({"redirect_uris": ["https://*.example.org/cb"]}, "invalid_redirect_uri", ""),
    ({}, "invalid_redirect_uri", "redirect_uris is required"),
    ({"redirect_uris": "https://app.example.org/cb"}, "invalid_client_metadata", "array of strings"),
    ({"redirect_uris": [REDIRECT_URI], "grant_types": ["password"]}, "invalid_client_metadata", "grant_types"),
    ({"redirect_uris": [REDIRECT_URI], "grant_types": ["implicit"], "response_types": ["token"]},
     "invalid_client_metadata", ""),
    ({"redirect_uris": [REDIRECT_URI], "response_types": ["code", "id_token"]}, "invalid_client_metadata", "only code"),
    ({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"}, "invalid_client_metadata",
     "client_credentials needs client authentication"),
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "tls_client_auth"}, "invalid_client_metadata",
     "token_endpoint_auth_method"),
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata",
     "exactly one of jwks and jwks_uri"),
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt",
      "jwks_uri": "http://keys.example.org/jwks"}, "invalid_client_metadata", "https"),
    ({"redirect_uris": [REDIRECT_URI], "id_token_signed_response_alg": "none"}, "invalid_client_metadata",
     "id_token_signed_response_alg"),
    ({"redirect_uris": [REDIRECT_URI], "software_statement": "eyJ.x.y"}, "invalid_software_statement", ""),
    ([REDIRECT_URI], "invalid_client_metadata", "JSON object"),
    # Wrong JSON types and characters PostgreSQL cannot store: the RFC's error, never a 500.
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": ["none"]}, "invalid_client_metadata",
     "token_endpoint_auth_method"),
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": {"a": 1}}, "invalid_client_metadata",
     "token_endpoint_auth_method"),
    ({"redirect_uris": ["https://app.example.org/cb\x00"]}, "invalid_redirect_uri", "control character"),
    ({"redirect_uris": [REDIRECT_URI], "post_logout_redirect_uris": ["https://app.example.org/\x7f"]},
     "invalid_redirect_uri", "control character"),
    ({"redirect_uris": [REDIRECT_URI], "client_name": "App\x00"}, "invalid_client_metadata", "control characters"),
    ({"redirect_uris": [REDIRECT_URI], "client_name": 7}, "invalid_client_metadata", "client_name"),
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt",
      "jwks_uri": "https://keys.example.org/\x00"}, "invalid_client_metadata", "jwks_uri"),
    # private_key_jwt keys: public RSA or EC keys only, at least one.
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": []}},
     "invalid_client_metadata", "at least one key"),
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt", "jwks": "keys"},
     "invalid_client_metadata", "JSON Web Key Set"),
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt",
      "jwks": {"keys": [{"kty": "EC"}]}}, "invalid_client_metadata", "valid RSA or EC keys"),
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": ["x"]}},
     "invalid_client_metadata", "valid RSA or EC keys"),
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt",
      "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, "invalid_client_metadata", "valid RSA or EC keys"),
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt",
      "jwks": {"keys": [PRIVATE_KEY.export_private(as_dict=True)]}}, "invalid_client_metadata", "public keys only"),
    ({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt",
      "jwks": {"keys": [{**PRIVATE_KEY.export_public(as_dict=True), "kid": "k\x00"}]}}, "invalid_client_metadata",
     "control characters"),
])
def test_bad_metadata_gets_the_rfc_7591_error(client, initial, metadata, error, text):
    response = register(client, metadata, initial)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == error
    assert text in body["error_description"]
    assert not ClientApplication.objects.exists()


def test_malformed_and_oversized_bodies(client, initial):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {initial}"}
    deep = client.post(REGISTER, "[" * 5000, content_type="application/json", **auth)
    assert deep.status_code == 400 and deep.json()["error"] == "invalid_client_metadata"
    form = client.post(REGISTER, "redirect_uris=x", content_type="application/x-www-form-urlencoded", **auth)
    assert form.status_code == 400 and form.json()["error"] == "invalid_client_metadata"
    big = client.post(REGISTER, json.dumps({"client_name": "x" * 70000}), content_type="application/json", **auth)
    assert big.status_code == 413
    assert not ClientApplication.objects.exists()


def test_rfc_7592_read_update_delete(client, initial):
    body = register(client, {"client_name": "App", "redirect_uris": [REDIRECT_URI]}, initial).json()
    uri = f"{REGISTER}/{body['client_id']}"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {body['registration_access_token']}"}

    read = client.get(uri, **auth)
    assert read.status_code == 200
    assert read.json()["client_name"] == "App" and read.json()["redirect_uris"] == [REDIRECT_URI]
    assert "client_secret" not in read.json() and "registration_access_token" not in read.json()

    changed = {"client_id": body["client_id"], "client_name": "Renamed",
               "redirect_uris": ["https://app.example.org/new"]}
    update = client.put(uri, json.dumps(changed), content_type="application/json", **auth)
    assert update.status_code == 200, update.content
    row = ClientApplication.objects.get(client_id=body["client_id"])
    assert (row.name, row.redirect_uris) == ("Renamed", "https://app.example.org/new")
    bad = client.put(uri, json.dumps({**changed, "redirect_uris": ["http://evil.example/cb"]}),
                     content_type="application/json", **auth)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_redirect_uri"
    public = client.put(uri, json.dumps({**changed, "token_endpoint_auth_method": "none"}),
                        content_type="application/json", **auth)
    assert public.status_code == 400 and "public and confidential" in public.json()["error_description"]
    assert ClientApplication.objects.get(client_id=body["client_id"]).redirect_uris == "https://app.example.org/new"

    deleted = client.delete(uri, **auth)
    assert deleted.status_code == 204
    assert not ClientApplication.objects.filter(client_id=body["client_id"]).exists()
    assert client.get(uri, **auth).status_code == 401


def test_management_needs_that_clients_registration_token(client, initial, oauth_project):
    first = register(client, {"redirect_uris": [REDIRECT_URI]}, initial).json()
    second = register(client, {"redirect_uris": [REDIRECT_URI]}, initial).json()
    other_token = {"HTTP_AUTHORIZATION": f"Bearer {second['registration_access_token']}"}
    for response in (client.get(f"{REGISTER}/{first['client_id']}", **other_token),
                     client.delete(f"{REGISTER}/{first['client_id']}", **other_token),
                     client.get(f"{REGISTER}/{first['client_id']}"),
                     client.get(f"{REGISTER}/{first['client_id']}", HTTP_AUTHORIZATION=f"Bearer {initial}")):
        assert response.status_code == 401 and response.json()["error"] == "invalid_token"
    assert ClientApplication.objects.filter(client_id=first["client_id"]).exists()
    manual = services.create_client(ProjectFactory(), "Manual", redirect_uris=REDIRECT_URI)[0]
    assert client.get(f"{REGISTER}/{manual.client_id}", HTTP_AUTHORIZATION="Bearer ").status_code == 401


def test_command_prints_a_working_token_and_discovery_lists_the_endpoint(client, oauth_project):
    out = StringIO()
    call_command("medplum_create_registration_token", "--project", str(oauth_project.pk), "--label", "ci",
                 "--days", "7", "--json", stdout=out)
    printed = json.loads(out.getvalue())
    assert RegistrationToken.objects.get().digest == hashlib.sha256(printed["registration_token"].encode()).hexdigest()
    assert printed["expires_at"]
    assert register(client, {"redirect_uris": [REDIRECT_URI]}, printed["registration_token"]).status_code == 201
    assert client.get("/.well-known/openid-configuration").json()["registration_endpoint"].endswith(
        "/oauth2/register")


@pytest.mark.parametrize("metadata", [
    {"token_endpoint_auth_method": "client_secret_post", "grant_types": ["authorization_code"]},
    {"token_endpoint_auth_method": "none", "grant_types": ["authorization_code"]},
    {"token_endpoint_auth_method": "client_secret_basic", "grant_types": ["client_credentials"],
     "response_types": []},
])
def test_a_read_returns_the_metadata_as_registered(client, initial, metadata):
    """RFC 7592 §2.1: the read returns all registered metadata, not what the client's type allows."""
    sent = {"redirect_uris": [REDIRECT_URI], **metadata}
    body = register(client, sent, initial).json()
    read = client.get(f"{REGISTER}/{body['client_id']}",
                      HTTP_AUTHORIZATION=f"Bearer {body['registration_access_token']}").json()
    for name in ("token_endpoint_auth_method", "grant_types", "response_types"):
        assert read[name] == body[name], name
    assert read["token_endpoint_auth_method"] == metadata["token_endpoint_auth_method"]
    assert read["grant_types"] == metadata["grant_types"]


def test_an_update_replaces_the_kept_metadata_and_is_audited(client, initial):
    body = register(client, {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "client_secret_post"},
                    initial).json()
    uri, auth = f"{REGISTER}/{body['client_id']}", {"HTTP_AUTHORIZATION": f"Bearer {body['registration_access_token']}"}
    changed = {"client_id": body["client_id"], "redirect_uris": [REDIRECT_URI],
               "grant_types": ["authorization_code", "refresh_token"]}
    assert client.put(uri, json.dumps(changed), content_type="application/json", **auth).status_code == 200
    read = client.get(uri, **auth).json()
    # Omitted fields take their defaults again (RFC 7592 §2.2: the update replaces the metadata).
    assert read["token_endpoint_auth_method"] == "client_secret_basic"
    assert read["grant_types"] == ["authorization_code", "refresh_token"]
    event = SecurityEvent.objects.get(event_type="client.updated")
    assert event.detail["fields"] == ["registered_metadata"]


def test_the_audit_trail_names_the_initial_access_token(client, oauth_project, settings):
    row, token = services.create_registration_token(oauth_project, label="partner")
    body = register(client, {"redirect_uris": [REDIRECT_URI]}, token).json()
    created = ClientApplication.objects.get(client_id=body["client_id"])
    event = SecurityEvent.objects.get(event_type="client.created", subject=created.reference)
    assert event.project_id == oauth_project.pk
    assert event.detail == {"public": False, "pkce_optional": False, "registration": "RFC 7591",
                            "registration_token": f"RegistrationToken/{row.pk}"}
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "OPEN_CLIENT_REGISTRATION": str(oauth_project.pk)}
    opened = register(client, {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"}).json()
    event = SecurityEvent.objects.get(subject=ClientApplication.reference_for(opened["client_id"]),
                                      event_type="client.created")
    assert event.detail["registration"] == "RFC 7591" and event.detail["registration_token"] is None


@pytest.mark.parametrize("metadata", [
    {"redirect_uris": ["http://127.0.0.1:5000/cb", "http://[::1]:5000/cb"], "token_endpoint_auth_method": "none"},
    {"redirect_uris": [REDIRECT_URI], "id_token_signed_response_alg": "RS256"},
    {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt",
     "jwks": {"keys": [PRIVATE_KEY.export_public(as_dict=True)]}},
    {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "private_key_jwt",
     "jwks_uri": "https://keys.example.org/jwks.json"},
])
def test_valid_metadata_is_registered_as_sent(client, initial, metadata):
    """Loopback http redirect URIs (RFC 8252 §7.3), the signing algorithm, private_key_jwt with either key source."""
    response = register(client, metadata, initial)
    assert response.status_code == 201, response.content
    body = response.json()
    assert {name: body[name] for name in metadata} == metadata
    row = ClientApplication.objects.get(client_id=body["client_id"])
    assert row.redirect_uri_list == metadata["redirect_uris"]
    assert (row.jwks, row.jwks_uri) == (metadata.get("jwks"), metadata.get("jwks_uri", ""))
    assert ("client_secret" in body) == (metadata.get("token_endpoint_auth_method") in (None, "client_secret_basic"))


def test_a_token_of_an_inactive_project_registers_nothing(client, oauth_project):
    _row, token = services.create_registration_token(oauth_project)
    services.update_project(oauth_project, active=False)
    response = register(client, {"redirect_uris": [REDIRECT_URI]}, token)
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"
    assert not ClientApplication.objects.exists()


def test_a_registered_client_uses_client_credentials_only_if_it_registered_that_grant(client, initial):
    """A client registered for sign-ins cannot act for itself (RFC 7591 §2 grant_types)."""
    signs_in = register(client, {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "client_secret_post"},
                        initial).json()
    acts = register(client, {"grant_types": ["client_credentials"], "response_types": [],
                             "token_endpoint_auth_method": "client_secret_post"}, initial).json()
    refused = post_form(client, "/oauth2/token", {"grant_type": "client_credentials",
                                                  "client_id": signs_in["client_id"],
                                                  "client_secret": signs_in["client_secret"]})
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"
    granted = post_form(client, "/oauth2/token", {"grant_type": "client_credentials", "client_id": acts["client_id"],
                                                  "client_secret": acts["client_secret"]})
    assert granted.status_code == 200, granted.content


@pytest.mark.parametrize(("registered", "other"), [("client_secret_basic", "client_secret_post"),
                                                   ("client_secret_post", "client_secret_basic")])
def test_a_registered_client_authenticates_only_by_its_registered_method(client, initial, registered, other):
    """RFC 7591 §2 token_endpoint_auth_method: the secret in the other place is refused as invalid_client."""
    app = register(client, {"grant_types": ["client_credentials"], "response_types": [],
                            "token_endpoint_auth_method": registered}, initial).json()
    form = {"grant_type": "client_credentials"}

    def token(method: str):
        if method == "client_secret_basic":
            return post_form(client, "/oauth2/token", form,
                             HTTP_AUTHORIZATION=basic_auth(app["client_id"], app["client_secret"]))
        return post_form(client, "/oauth2/token", {**form, "client_id": app["client_id"],
                                                   "client_secret": app["client_secret"]})

    refused = token(other)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client", refused.content
    assert not ClientApplication.objects.get(client_id=app["client_id"]).logins.exists()
    granted = token(registered)
    assert granted.status_code == 200 and granted.json()["token_type"] == "Bearer", granted.content


def test_a_client_made_by_an_admin_authenticates_by_either_secret_method(client, confidential_client):
    """Only registered clients are held to one method: Project Admin's clients take both (Medplum's do)."""
    app, secret = confidential_client, confidential_client.plaintext_secret
    by_post = post_form(client, "/oauth2/token", {"grant_type": "client_credentials", "client_id": app.client_id,
                                                  "client_secret": secret})
    by_basic = post_form(client, "/oauth2/token", {"grant_type": "client_credentials"},
                         HTTP_AUTHORIZATION=basic_auth(app.client_id, secret))
    assert (by_post.status_code, by_basic.status_code) == (200, 200), (by_post.content, by_basic.content)


def test_a_registered_client_gets_refresh_tokens_only_if_it_registered_that_grant(client, initial, patient):
    """RFC 7591 §2 grant_types: no refresh token for a client that may not use one; after a 7592
    update drops the grant, a refresh token issued before is refused (unauthorized_client)."""
    metadata = {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"}
    without = ClientApplication.objects.get(client_id=register(client, metadata, initial).json()["client_id"])
    assert "refresh_token" not in Flow(client, without).tokens(scope="openid offline_access")
    client.logout()

    registered = register(client, {**metadata, "grant_types": ["authorization_code", "refresh_token"]}, initial).json()
    app = ClientApplication.objects.get(client_id=registered["client_id"])
    tokens = Flow(client, app).tokens(scope="openid offline_access")
    assert tokens["refresh_token"]
    refresh = {"grant_type": "refresh_token", "client_id": app.client_id}
    rotated = post_form(client, "/oauth2/token", {**refresh, "refresh_token": tokens["refresh_token"]})
    assert rotated.status_code == 200, rotated.content

    auth = {"HTTP_AUTHORIZATION": f"Bearer {registered['registration_access_token']}"}
    changed = {**metadata, "client_id": app.client_id, "grant_types": ["authorization_code"]}
    assert client.put(registered["registration_client_uri"], json.dumps(changed), content_type="application/json",
                      **auth).status_code == 200
    refused = post_form(client, "/oauth2/token", {**refresh, "refresh_token": rotated.json()["refresh_token"]})
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client", refused.content


def test_a_client_registered_without_the_code_response_type_cannot_use_authorize(client, initial, patient):
    """RFC 7591 §2 response_types: a client_credentials-only client gets unauthorized_client at its
    registered redirect URI (never a code)."""
    body = register(client, {"redirect_uris": [REDIRECT_URI], "grant_types": ["client_credentials"],
                             "response_types": [], "token_endpoint_auth_method": "client_secret_basic"},
                    initial).json()
    app = ClientApplication.objects.get(client_id=body["client_id"])
    location = Flow(client, app).authorize()["Location"]
    assert location.startswith(REDIRECT_URI + "?"), location
    assert "error=unauthorized_client" in location and "code=" not in location and "state=xyz-state" in location
