"""``/oauth2/introspect`` (RFC 7662, with SMART's required fields) and ``/oauth2/revoke`` (RFC 7009)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from medplum_auth import tokens
from medplum_auth.conf import auth_settings
from medplum_auth.models import Login
from tests.factories import ClientApplicationFactory, ProjectFactory
from tests.oauth.conftest import (
    REDIRECT_URI,
    Flow,
    assert_oauth_error,
    basic_auth,
    login_of,
    obtain_tokens,
    post_form,
    userinfo_status,
    verify_jwt,
)

INTROSPECT = "/oauth2/introspect"
REVOKE = "/oauth2/revoke"


@pytest.fixture
def issued(flow) -> dict[str, Any]:
    return obtain_tokens(flow, scope="openid fhirUser offline_access patient/*.rs")


@pytest.fixture
def resource_server(oauth_project):
    """A confidential client of the same project, acting as the resource server."""
    return ClientApplicationFactory(project=oauth_project, name="Resource server")


def introspect(http: Any, caller: Any, token: str | None, how: str = "basic"):
    data = {"token": token}
    if how == "basic":
        auth = basic_auth(caller.client_id, caller.plaintext_secret)
        return post_form(http, INTROSPECT, data, HTTP_AUTHORIZATION=auth)
    return post_form(http, INTROSPECT, {**data, "client_id": caller.client_id,
                                        "client_secret": caller.plaintext_secret})


def assert_inactive(response) -> None:
    assert response.status_code == 200, response.content
    assert response.json() == {"active": False}  # RFC 7662 §2.2: nothing else about an inactive token
    assert response["Cache-Control"] == "no-store"


# --- introspection ----------------------------------------------------------------------------

@pytest.mark.spec("RFC 7662 §2.2")
@pytest.mark.spec("SMART 2.2 token-introspection")
@pytest.mark.parametrize("how", ["basic", "post"])
def test_introspect_active_access_token(client, issued, resource_server, patient, flow, issuer, how):
    response = introspect(client, resource_server, issued["access_token"], how)
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    claims = verify_jwt(client, issued["access_token"])[1]
    assert body["active"] is True
    assert body["scope"] == "openid fhirUser offline_access patient/*.rs"
    assert body["client_id"] == flow.app.client_id
    assert body["exp"] == claims["exp"] and body["iat"] == claims["iat"]
    assert body["iss"] == issuer
    assert body["sub"] == str(patient.user_id)
    assert body["token_type"] == "Bearer"
    assert body["fhirUser"] == f"{auth_settings.fhir_base_url}/Patient/{patient.profile_id}"
    assert body["patient"] == patient.profile_id


def test_introspect_practitioner_has_no_patient(client, oauth_project, public_client, resource_server):
    from tests.factories import MembershipFactory, UserFactory

    user = UserFactory(email="doc@example.org", username="doc@example.org")
    doctor = MembershipFactory(project=oauth_project, user=user, profile_type="Practitioner")
    body = obtain_tokens(Flow(client, public_client), email="doc@example.org")
    result = introspect(client, resource_server, body["access_token"]).json()
    assert result["active"] is True
    assert result["fhirUser"].endswith(f"/Practitioner/{doctor.profile_id}")
    assert "patient" not in result


def test_introspect_refresh_token(client, issued, resource_server, flow):
    body = introspect(client, resource_server, issued["refresh_token"]).json()
    assert body["active"] is True
    assert body["client_id"] == flow.app.client_id
    assert body["exp"] == int(login_of(issued["access_token"]).refresh_expires_at.timestamp())
    rotated = post_form(client, "/oauth2/token", {"grant_type": "refresh_token", "client_id": flow.app.client_id,
                                                  "refresh_token": issued["refresh_token"]}).json()
    assert_inactive(introspect(client, resource_server, issued["refresh_token"]))
    assert introspect(client, resource_server, rotated["refresh_token"]).json()["active"] is True


@pytest.mark.spec("RFC 7662 §2.1")
def test_introspect_by_another_projects_client(client, issued):
    outsider = ClientApplicationFactory(project=ProjectFactory())
    assert_inactive(introspect(client, outsider, issued["access_token"]))
    assert_inactive(introspect(client, outsider, issued["refresh_token"]))


@pytest.mark.spec("RFC 7662 §2.2")
@pytest.mark.parametrize("case", ["revoked", "expired", "garbage", "jwt-shaped garbage", "id_token",
                                  "inactive membership"])
def test_introspect_inactive_tokens(client, issued, resource_server, patient, case):
    token = issued["access_token"]
    if case == "revoked":
        Login.objects.update(revoked_at=timezone.now())
    elif case == "expired":
        login = login_of(token)
        token = tokens.issue_access_token(subject=str(patient.user_id), client_id=login.client.client_id,
                                          login_id=str(login.pk), scope="openid", profile=None, lifetime=-3600)
    elif case == "garbage":
        token = "garbage"
    elif case == "jwt-shaped garbage":
        token = "a.b.c"
    elif case == "id_token":
        token = issued["id_token"]
    else:
        patient.active = False
        patient.save()
    assert_inactive(introspect(client, resource_server, token))


@pytest.mark.spec("RFC 7662 §2.2")
@pytest.mark.parametrize("case", ["expired", "revoked", "disabled client", "inactive user", "inactive membership"])
def test_introspect_inactive_refresh_tokens(client, issued, resource_server, patient, flow, case):
    if case == "expired":
        Login.objects.update(refresh_expires_at=timezone.now() - timedelta(seconds=1))
    elif case == "revoked":
        Login.objects.update(revoked_at=timezone.now())
    elif case == "disabled client":
        flow.app.status = "off"
        flow.app.save()
    elif case == "inactive user":
        patient.user.is_active = False
        patient.user.save()
    else:
        patient.active = False
        patient.save()
    assert_inactive(introspect(client, resource_server, issued["refresh_token"]))


@pytest.mark.spec("RFC 7662 §2.2")
@pytest.mark.parametrize("case", ["disabled client", "inactive user"])
def test_introspect_agrees_with_the_resource_server(client, issued, resource_server, patient, flow, case):
    """A token the API refuses (userinfo 401) is not active to introspection either."""
    if case == "disabled client":
        flow.app.status = "off"
        flow.app.save()
    else:
        patient.user.is_active = False
        patient.user.save()
    assert userinfo_status(client, issued["access_token"]) == 401
    assert_inactive(introspect(client, resource_server, issued["access_token"]))


@pytest.mark.spec("RFC 7662 §2.1")
@pytest.mark.parametrize("auth", ["none", "wrong secret", "public client", "unknown client"])
def test_introspect_requires_client_authentication(client, issued, resource_server, public_client, auth):
    data: dict[str, Any] = {"token": issued["access_token"]}
    headers: dict[str, str] = {}
    if auth == "wrong secret":
        headers["HTTP_AUTHORIZATION"] = basic_auth(resource_server.client_id, "0" * 64)
    elif auth == "public client":
        data["client_id"] = public_client.client_id
    elif auth == "unknown client":
        data.update(client_id="nobody", client_secret="x")
    response = post_form(client, INTROSPECT, data, **headers)
    assert_oauth_error(response, "invalid_client", status=401)
    assert response["WWW-Authenticate"].startswith("Basic ")


def test_introspect_missing_token(client, resource_server):
    assert_oauth_error(introspect(client, resource_server, None), "invalid_request")


# --- revocation -------------------------------------------------------------------------------

def revoke(http: Any, app: Any, token: str | None, **extra: Any):
    data = {"token": token, "client_id": app.client_id, **extra}
    return post_form(http, REVOKE, data)


@pytest.mark.spec("RFC 7009 §2.1")
@pytest.mark.spec("RFC 7009 §2.2")
@pytest.mark.parametrize("which, hint", [("access_token", None), ("refresh_token", None),
                                         ("access_token", "refresh_token"), ("refresh_token", "access_token")])
def test_client_revokes_its_own_token(client, issued, flow, which, hint):
    response = revoke(client, flow.app, issued[which], token_type_hint=hint)
    assert response.status_code == 200, response.content
    assert response.content == b""
    login = login_of(issued["access_token"])
    assert login.revoked_at is not None and login.revoked_reason == "revocation_endpoint"
    assert userinfo_status(client, issued["access_token"]) == 401
    refresh = post_form(client, "/oauth2/token", {"grant_type": "refresh_token", "client_id": flow.app.client_id,
                                                  "refresh_token": issued["refresh_token"]})
    assert_oauth_error(refresh, "invalid_grant")


def test_confidential_client_revokes_with_basic_auth(client, confidential_client, patient):
    flow = Flow(client, confidential_client)
    issued = obtain_tokens(flow, token_overrides={"client_secret": confidential_client.plaintext_secret})
    response = post_form(client, REVOKE, {"token": issued["access_token"]},
                         HTTP_AUTHORIZATION=basic_auth(confidential_client.client_id,
                                                       confidential_client.plaintext_secret))
    assert response.status_code == 200
    assert userinfo_status(client, issued["access_token"]) == 401


@pytest.mark.spec("RFC 7009 §2.1")
def test_revoking_another_clients_token_does_nothing(client, issued, oauth_project):
    other = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=REDIRECT_URI)
    for which in ("access_token", "refresh_token"):
        response = revoke(client, other, issued[which])
        assert response.status_code == 200
    assert login_of(issued["access_token"]).revoked_at is None
    assert userinfo_status(client, issued["access_token"]) == 200


@pytest.mark.spec("RFC 7009 §2.2")
@pytest.mark.parametrize("token", ["unknown", "a.b.c", "x" * 300])
def test_revoking_an_unknown_token(client, issued, flow, token):
    assert revoke(client, flow.app, token).status_code == 200
    assert login_of(issued["access_token"]).revoked_at is None


def test_revoking_twice(client, issued, flow):
    assert revoke(client, flow.app, issued["access_token"]).status_code == 200
    assert revoke(client, flow.app, issued["access_token"]).status_code == 200


@pytest.mark.spec("RFC 7009 §2.2.1")
@pytest.mark.parametrize("auth", ["wrong secret basic", "wrong secret post", "unknown client", "no client"])
def test_revoke_with_bad_client_authentication(client, issued, confidential_client, auth):
    data: dict[str, Any] = {"token": issued["access_token"]}
    headers: dict[str, str] = {}
    if auth == "wrong secret basic":
        headers["HTTP_AUTHORIZATION"] = basic_auth(confidential_client.client_id, "0" * 64)
    elif auth == "wrong secret post":
        data.update(client_id=confidential_client.client_id, client_secret="0" * 64)
    elif auth == "unknown client":
        data["client_id"] = "nobody"
    response = post_form(client, REVOKE, data, **headers)
    assert_oauth_error(response, "invalid_client", status=401)
    assert response["WWW-Authenticate"].startswith("Basic ")
    assert login_of(issued["access_token"]).revoked_at is None


def test_confidential_client_cannot_revoke_as_public(client, confidential_client, patient):
    """A confidential client's id alone is not authentication."""
    flow = Flow(client, confidential_client)
    issued = obtain_tokens(flow, token_overrides={"client_secret": confidential_client.plaintext_secret})
    assert_oauth_error(revoke(client, confidential_client, issued["access_token"]), "invalid_client", status=401)
    assert login_of(issued["access_token"]).revoked_at is None


def test_revoke_missing_token(client, public_client):
    assert_oauth_error(revoke(client, public_client, None), "invalid_request")
