"""Discovery (OIDC Discovery 1.0 §3, RFC 8414 §2) and the JWK Set (RFC 7517 §5).

Everything advertised must work: every endpoint resolves, only S256 and ``code`` are listed,
``iss`` in authorization responses is announced (RFC 9207 §3). The JWKS publishes the active
key and inactive-but-unretired ones, each with a ``kid`` and no private members, so tokens
signed before a rotation keep verifying until their key is retired.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import override_settings
from jwcrypto import jwk, jws

from medplum_auth import tokens
from medplum_auth.conf import auth_settings
from medplum_auth.models import SigningKey
from medplum_auth.services import retire_signing_key, rotate_signing_keys
from tests.oauth.conftest import id_token_claims

DISCOVERY_PATHS = ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
ENDPOINTS = ["authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri", "end_session_endpoint",
             "introspection_endpoint", "revocation_endpoint"]
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


@pytest.fixture(autouse=True)
def _fresh_key_cache():
    """Key rows created here vanish with the test's transaction: so must the cached signer."""
    tokens.clear_cache()
    yield
    tokens.clear_cache()


@pytest.fixture
def metadata(client, db) -> dict:
    return client.get(DISCOVERY_PATHS[0]).json()


def jwks(client) -> dict:
    return client.get("/.well-known/jwks.json").json()


@pytest.mark.spec("OIDC Discovery §4.2, RFC 8414 §3.2")
@pytest.mark.parametrize("path", DISCOVERY_PATHS)
def test_discovery_document_is_public_json(client, db, path):
    response = client.get(path, HTTP_ORIGIN="https://app.example.org")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Access-Control-Allow-Origin"] == "*"
    assert "public" in response["Cache-Control"]


@pytest.mark.spec("RFC 8414 §3, OIDC Discovery §4")
def test_both_discovery_documents_are_the_same(client, db):
    first, second = (client.get(path).json() for path in DISCOVERY_PATHS)
    assert first == second


@pytest.mark.spec("OIDC Discovery §3, RFC 8414 §2")
def test_discovery_values(metadata, issuer):
    assert metadata["issuer"] == issuer
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["response_modes_supported"] == ["query"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert metadata["grant_types_supported"] == ["authorization_code", "refresh_token", "client_credentials"]
    assert metadata["subject_types_supported"] == ["public"]
    assert "RS256" in metadata["id_token_signing_alg_values_supported"]
    assert "none" not in metadata["id_token_signing_alg_values_supported"]
    assert "openid" in metadata["scopes_supported"]
    assert set(metadata["prompt_values_supported"]) <= {"none", "login", "consent", "select_account"}
    assert metadata["request_parameter_supported"] is False
    assert metadata["request_uri_parameter_supported"] is False
    assert metadata["claims_parameter_supported"] is False
    assert "plain" not in metadata["code_challenge_methods_supported"]
    assert not {"implicit", "password"} & set(metadata["grant_types_supported"])
    assert set(metadata["token_endpoint_auth_methods_supported"]) >= {"client_secret_basic", "client_secret_post",
                                                                      "private_key_jwt", "none"}


@pytest.mark.spec("RFC 8414 §2")
@pytest.mark.parametrize("field", ENDPOINTS)
def test_every_advertised_endpoint_resolves(client, metadata, issuer, field):
    url = metadata[field]
    assert url.startswith(issuer + "/")
    path = urlsplit(url).path
    for method in (client.get, client.post):
        assert method(path).status_code != 404, (field, method)


@pytest.mark.spec("RFC 8414 §2")
def test_advertised_endpoints_are_ours(metadata, issuer):
    assert {field: metadata[field] for field in ENDPOINTS} == {
        "authorization_endpoint": f"{issuer}/oauth2/authorize",
        "token_endpoint": f"{issuer}/oauth2/token",
        "userinfo_endpoint": f"{issuer}/oauth2/userinfo",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "end_session_endpoint": f"{issuer}/oauth2/logout",
        "introspection_endpoint": f"{issuer}/oauth2/introspect",
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
    }


@pytest.mark.spec("OIDC Discovery §4.3")
@override_settings(MEDPLUM_AUTH={**settings.MEDPLUM_AUTH, "ISSUER": "https://auth.example.org"})
def test_issuer_follows_the_setting(client, db):
    data = client.get(DISCOVERY_PATHS[0]).json()
    assert data["issuer"] == "https://auth.example.org"
    assert all(data[field].startswith("https://auth.example.org/") for field in ENDPOINTS)


@pytest.mark.spec("RFC 8414 §3")
@pytest.mark.parametrize("path", [*DISCOVERY_PATHS, "/.well-known/jwks.json"])
def test_metadata_is_get_only(client, db, path):
    assert client.post(path).status_code == 405


@pytest.mark.spec("RFC 8414 §2 id_token_signing_alg_values_supported")
def test_advertised_algorithms_cover_the_published_keys(client, metadata):
    published = {key["alg"] for key in jwks(client)["keys"]}
    assert published <= set(metadata["id_token_signing_alg_values_supported"])


# --- JWKS --------------------------------------------------------------------------------------------


@pytest.mark.spec("RFC 7517 §5, OIDC Core §10.1")
def test_jwks_keys_have_kid_and_no_private_members(client, db):
    rotate_signing_keys("ES256")  # an inactive RSA key and an active EC key
    response = client.get("/.well-known/jwks.json", HTTP_ORIGIN="https://app.example.org")
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == "*"
    keys = response.json()["keys"]
    assert len(keys) >= 2
    kids = [key["kid"] for key in keys]
    assert all(kids)
    assert len(set(kids)) == len(kids)  # RFC 7517 §4.5: distinct
    for key in keys:
        assert not PRIVATE_MEMBERS & set(key), key
        assert key["use"] == "sig"
        assert key["alg"] in {"RS256", "ES256", "ES384"}
        assert not jwk.JWK(**key).has_private


@pytest.mark.spec("RFC 7517 §5, OIDC Core §10.1.1 (key rotation)")
def test_jwks_keeps_inactive_keys_and_drops_retired_ones(client, db):
    old = SigningKey.objects.get(status=SigningKey.Status.ACTIVE)
    middle = rotate_signing_keys()
    new = rotate_signing_keys()
    kids = {key["kid"] for key in jwks(client)["keys"]}
    assert {old.kid, middle.kid, new.kid} <= kids
    retire_signing_key(middle.kid)
    kids = {key["kid"] for key in jwks(client)["keys"]}
    assert middle.kid not in kids
    assert {old.kid, new.kid} <= kids


@pytest.mark.spec("OIDC Core §10.1.1 (key rotation)")
def test_tokens_signed_before_a_rotation_still_verify(flow, client):
    before = flow.tokens(scope="openid email")
    old_kid = _kid(before["access_token"])
    new = rotate_signing_keys()
    assert new.kid != old_kid
    info = client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {before['access_token']}")
    assert info.status_code == 200, info.content
    assert info.json()["email"] == "pat@example.org"
    assert id_token_claims(before["id_token"])["sub"] == info.json()["sub"]
    after = flow.tokens(prompt="none", scope="openid email")
    assert _kid(after["access_token"]) == _kid(after["id_token"]) == new.kid
    # Once the old key is retired, what it signed no longer verifies.
    retire_signing_key(old_kid)
    info = client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {before['access_token']}")
    assert info.status_code == 401
    assert client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {after['access_token']}").status_code == 200


def _kid(token: str) -> str:
    parsed = jws.JWS()
    parsed.deserialize(token)
    return parsed.jose_header["kid"]


@pytest.mark.spec("OIDC Core §10.1")
def test_new_tokens_are_signed_by_the_active_key(flow, client):
    body = flow.tokens()
    active = SigningKey.objects.get(status=SigningKey.Status.ACTIVE)
    assert _kid(body["id_token"]) == _kid(body["access_token"]) == active.kid
    keyset = jwk.JWKSet.from_json(client.get("/.well-known/jwks.json").content)
    for token in (body["id_token"], body["access_token"]):
        parsed = jws.JWS()
        parsed.deserialize(token)
        parsed.verify(keyset.get_key(active.kid), alg=active.algorithm)
    assert active.algorithm == auth_settings.SIGNING_ALGORITHM
