"""The refresh_token grant: rotation on every use, reuse detection that revokes the family,
scope rules, client binding, expiry, and ID tokens on refresh."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from medplum_auth.conf import auth_settings
from medplum_auth.models import Login
from medplum_auth.oauth2_validators import token_digest
from tests.factories import ClientApplicationFactory
from tests.oauth.conftest import (
    REDIRECT_URI,
    Flow,
    assert_no_store,
    assert_oauth_error,
    basic_auth,
    login_of,
    obtain_tokens,
    post_form,
    token_hash,
    userinfo_status,
    verify_jwt,
)

OFFLINE = "openid profile offline_access"


def refresh(http: Any, app: Any, refresh_token: str, **extra: Any):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": app.client_id}
    headers = {k: v for k, v in extra.items() if k.startswith("HTTP_")}
    data.update({k: v for k, v in extra.items() if not k.startswith("HTTP_")})
    return post_form(http, "/oauth2/token", data, **headers)


@pytest.fixture
def offline(flow) -> dict[str, Any]:
    """Tokens of a public client's code flow with ``offline_access``."""
    return obtain_tokens(flow, scope=OFFLINE)


@pytest.mark.spec("RFC 6749 §6")
@pytest.mark.spec("RFC 9700 §4.14.2")
def test_refresh_rotates_the_refresh_token(client, flow, offline):
    response = refresh(client, flow.app, offline["refresh_token"])
    assert response.status_code == 200, response.content
    assert_no_store(response)
    body = response.json()
    assert body["refresh_token"] != offline["refresh_token"]
    assert body["access_token"] != offline["access_token"]
    assert body["token_type"] == "Bearer"
    assert body["scope"] == OFFLINE
    assert body["project"] == offline["project"]
    assert body["profile"] == offline["profile"]
    assert body["patient"] == offline["patient"]
    login = login_of(body["access_token"])
    assert login == login_of(offline["access_token"])  # the same login (token family)
    assert login.refresh_digest == token_digest(body["refresh_token"])
    assert login.previous_refresh_digest == token_digest(offline["refresh_token"])
    assert login.last_refreshed_at is not None and login.refresh_rotated_at is not None
    assert userinfo_status(client, body["access_token"]) == 200

    # Every use rotates: a chain of refreshes keeps working with the newest token.
    newest = body["refresh_token"]
    for _ in range(3):
        step = refresh(client, flow.app, newest)
        assert step.status_code == 200, step.content
        assert step.json()["refresh_token"] != newest
        newest = step.json()["refresh_token"]


@pytest.mark.spec("RFC 9700 §4.14.2")
@pytest.mark.spec("RFC 6749 §10.4")
def test_replayed_refresh_token_revokes_the_whole_family(client, flow, offline):
    rotated = refresh(client, flow.app, offline["refresh_token"]).json()

    replay = refresh(client, flow.app, offline["refresh_token"])
    assert_oauth_error(replay, "invalid_grant", description="Token revoked")
    assert_no_store(replay)

    login = Login.objects.get(pk=login_of(offline["access_token"]).pk)
    assert login.revoked_at is not None
    assert login.revoked_reason == "refresh_token_reuse"
    assert_oauth_error(refresh(client, flow.app, rotated["refresh_token"]), "invalid_grant")
    assert userinfo_status(client, offline["access_token"]) == 401
    assert userinfo_status(client, rotated["access_token"]) == 401


def test_older_generations_are_refused(client, flow, offline):
    first = refresh(client, flow.app, offline["refresh_token"]).json()
    refresh(client, flow.app, first["refresh_token"])
    assert_oauth_error(refresh(client, flow.app, offline["refresh_token"]), "invalid_grant")


@pytest.mark.spec("RFC 6749 §6")
def test_scope_can_be_narrowed(client, flow, offline):
    response = refresh(client, flow.app, offline["refresh_token"], scope="openid offline_access")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["scope"] == "openid offline_access"
    assert verify_jwt(client, body["access_token"])[1]["scope"] == "openid offline_access"
    info = client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}").json()
    assert "name" not in info
    # RFC 6749 §6: the refresh token keeps the scope originally granted.
    again = refresh(client, flow.app, body["refresh_token"])
    assert again.json()["scope"] == OFFLINE


@pytest.mark.spec("RFC 6749 §6")
@pytest.mark.parametrize("scope", ["openid profile offline_access email", "openid patient/*.cruds", "nonsense"])
def test_scope_cannot_be_widened(client, flow, offline, scope):
    assert_oauth_error(refresh(client, flow.app, offline["refresh_token"], scope=scope), "invalid_scope")
    assert refresh(client, flow.app, offline["refresh_token"]).status_code == 200  # not spent


@pytest.mark.spec("RFC 6749 §6")
@pytest.mark.spec("RFC 6749 §10.4")
def test_refresh_token_is_bound_to_its_client(client, oauth_project, flow, offline):
    other = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=REDIRECT_URI)
    assert_oauth_error(refresh(client, other, offline["refresh_token"]), "invalid_grant")
    confidential = ClientApplicationFactory(project=oauth_project)
    assert_oauth_error(refresh(client, confidential, offline["refresh_token"],
                               client_secret=confidential.plaintext_secret), "invalid_grant")
    login = login_of(offline["access_token"])
    assert login.revoked_at is None
    assert refresh(client, flow.app, offline["refresh_token"]).status_code == 200


@pytest.mark.spec("RFC 6749 §6")
def test_confidential_client_must_authenticate_to_refresh(client, confidential_client, patient):
    flow = Flow(client, confidential_client)
    tokens = obtain_tokens(flow, scope=OFFLINE, token_overrides={"client_secret": confidential_client.plaintext_secret})
    assert_oauth_error(refresh(client, confidential_client, tokens["refresh_token"]), "invalid_client", status=401)
    assert_oauth_error(refresh(client, confidential_client, tokens["refresh_token"], client_secret="0" * 64),
                       "invalid_client", status=401)
    auth = basic_auth(confidential_client.client_id, confidential_client.plaintext_secret)
    ok = refresh(client, confidential_client, tokens["refresh_token"], HTTP_AUTHORIZATION=auth)
    assert ok.status_code == 200, ok.content


@pytest.mark.spec("RFC 6749 §5.2")
def test_inactive_membership_cannot_refresh(client, flow, offline, patient):
    patient.active = False
    patient.save()
    assert_oauth_error(refresh(client, flow.app, offline["refresh_token"]), "invalid_grant",
                       description="Profile not active")


def test_inactive_user_cannot_refresh(client, flow, offline, patient):
    patient.user.is_active = False
    patient.user.save()
    assert_oauth_error(refresh(client, flow.app, offline["refresh_token"]), "invalid_grant")


@pytest.mark.spec("RFC 6749 §5.2")
def test_expired_refresh_token(client, flow, offline):
    Login.objects.update(refresh_expires_at=timezone.now() - timedelta(seconds=1))
    assert_oauth_error(refresh(client, flow.app, offline["refresh_token"]), "invalid_grant",
                       description="Refresh token expired")


def test_refresh_lifetime_is_renewed_on_rotation(client, oauth_project, patient):
    app = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=REDIRECT_URI,
                                   refresh_token_lifetime=600)
    tokens = obtain_tokens(Flow(client, app), scope=OFFLINE)
    login = login_of(tokens["access_token"])
    assert abs((login.refresh_expires_at - timezone.now()).total_seconds() - 600) < 30
    Login.objects.update(refresh_expires_at=timezone.now() + timedelta(seconds=5))
    refresh(client, app, tokens["refresh_token"])
    login.refresh_from_db()
    assert abs((login.refresh_expires_at - timezone.now()).total_seconds() - 600) < 30


def test_default_refresh_lifetime(client, flow, offline):
    login = login_of(offline["access_token"])
    expected = timezone.now() + timedelta(seconds=auth_settings.REFRESH_TOKEN_LIFETIME)
    assert abs((login.refresh_expires_at - expected).total_seconds()) < 30


@pytest.mark.spec("RFC 7009 §2.1")
def test_revoked_login_cannot_refresh(client, flow, offline):
    Login.objects.update(revoked_at=timezone.now(), revoked_reason="test")
    assert_oauth_error(refresh(client, flow.app, offline["refresh_token"]), "invalid_grant",
                       description="Token revoked")


@pytest.mark.spec("RFC 8725 §3.11")
@pytest.mark.parametrize("which", ["access_token", "id_token", "garbage", "long", "empty"])
def test_other_tokens_are_not_refresh_tokens(client, flow, offline, which):
    value = {"garbage": "not-a-token", "long": "r" * 600, "empty": ""}[which] if which not in offline \
        else offline[which]
    response = refresh(client, flow.app, value)
    assert_oauth_error(response, "invalid_grant", description="Invalid refresh token")
    assert login_of(offline["access_token"]).revoked_at is None


def test_missing_refresh_token(client, flow):
    response = post_form(client, "/oauth2/token", {"grant_type": "refresh_token", "client_id": flow.app.client_id})
    assert_oauth_error(response, "invalid_request")


@pytest.mark.spec("OIDC Core §12.2")
def test_id_token_is_reissued_on_refresh(client, flow, offline, patient):
    original = verify_jwt(client, offline["id_token"])[1]
    body = refresh(client, flow.app, offline["refresh_token"]).json()
    header, claims = verify_jwt(client, body["id_token"])
    assert header["typ"] == "JWT"
    for name in ("iss", "sub", "aud", "auth_time", "fhirUser"):
        assert claims[name] == original[name], name
    assert claims["aud"] == flow.app.client_id
    assert claims["at_hash"] == token_hash(body["access_token"])
    assert "nonce" not in claims  # §12.2: SHOULD NOT be present
    assert claims["iat"] >= original["iat"]


def test_no_id_token_on_refresh_without_openid(client, flow):
    tokens = obtain_tokens(flow, scope="offline_access patient/Observation.rs", nonce=None)
    assert "id_token" not in tokens
    body = refresh(client, flow.app, tokens["refresh_token"]).json()
    assert "id_token" not in body
    assert body["scope"] == "offline_access patient/Observation.rs"


def test_always_issue_refresh_token_client_keeps_rotating(client, oauth_project, patient):
    app = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=REDIRECT_URI,
                                   always_issue_refresh_token=True)
    tokens = obtain_tokens(Flow(client, app))
    body = refresh(client, app, tokens["refresh_token"]).json()
    assert body["refresh_token"] != tokens["refresh_token"]
    assert_oauth_error(refresh(client, app, tokens["refresh_token"]), "invalid_grant")


def _refresh_without_client_id(http: Any, refresh_token: str, **extra: Any):
    return post_form(http, "/oauth2/token", {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra})


@pytest.mark.spec("RFC 6749 §6")
@pytest.mark.spec("SMART App Launch 2.2 refresh: grant_type, refresh_token, scope (no client_id)")
def test_public_client_may_refresh_without_client_id(client, flow, offline):
    """SMART client-js (fhirclient) sends no client_id by default: the token names its client."""
    response = _refresh_without_client_id(client, offline["refresh_token"])
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["refresh_token"] != offline["refresh_token"]
    assert body["patient"] == offline["patient"]
    assert verify_jwt(client, body["access_token"])[1]["client_id"] == flow.app.client_id
    assert login_of(body["access_token"]) == login_of(offline["access_token"])
    narrowed = _refresh_without_client_id(client, body["refresh_token"], scope="openid offline_access")
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "openid offline_access"


@pytest.mark.spec("RFC 9700 §4.14.2")
def test_replay_without_client_id_still_revokes_the_family(client, flow, offline):
    rotated = _refresh_without_client_id(client, offline["refresh_token"]).json()
    assert_oauth_error(_refresh_without_client_id(client, offline["refresh_token"]), "invalid_grant",
                       description="Token revoked")
    assert login_of(offline["access_token"]).revoked_reason == "refresh_token_reuse"
    assert_oauth_error(refresh(client, flow.app, rotated["refresh_token"]), "invalid_grant")


@pytest.mark.spec("RFC 6749 §6")
def test_confidential_client_without_client_id_must_still_authenticate(client, confidential_client, patient):
    flow = Flow(client, confidential_client)
    tokens = obtain_tokens(flow, scope=OFFLINE, token_overrides={"client_secret": confidential_client.plaintext_secret})
    assert_oauth_error(_refresh_without_client_id(client, tokens["refresh_token"]), "invalid_client", status=401)
    assert_oauth_error(_refresh_without_client_id(client, tokens["refresh_token"], client_secret="0" * 64),
                       "invalid_client", status=401)
    assert login_of(tokens["access_token"]).revoked_at is None
    ok = _refresh_without_client_id(client, tokens["refresh_token"], client_secret=confidential_client.plaintext_secret)
    assert ok.status_code == 200, ok.content


@pytest.mark.parametrize("value", ["not-a-token", "r" * 600])
def test_unknown_refresh_token_without_client_id_is_refused(client, flow, offline, value):
    response = _refresh_without_client_id(client, value)
    # No client_id and no token to name the client: nobody to authenticate (RFC 6749 §5.2).
    assert_oauth_error(response, "invalid_client", status=401)
