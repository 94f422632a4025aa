"""Sessions: the project's active logins, and revoking them makes their tokens fail at /oauth2/userinfo."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from medplum_auth.models import Login
from tests.factories import ClientApplicationFactory, MembershipFactory, UserFactory
from tests.oauth.conftest import REDIRECT_URI, Flow

from .conftest import text, url

pytestmark = pytest.mark.django_db


@pytest.fixture
def patient(project):
    user = UserFactory(email="pat@example.org", username="pat@example.org")
    return MembershipFactory(project=project, user=user, profile_type="Patient", profile_display="Pat Lee")


@pytest.fixture
def app(project):
    return ClientApplicationFactory(project=project, public=True, redirect_uris=REDIRECT_URI, name="Patient portal")


def signed_in_token(app: Any, scope: str = "openid profile offline_access") -> str:
    """A real code flow in its own browser; the access token."""
    return Flow(Client(), app).tokens(scope=scope)["access_token"]


def userinfo(token: str) -> int:
    return Client().get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {token}").status_code


def test_sessions_list_the_projects_active_logins(pa, project, other_project, app, patient):
    signed_in_token(app)
    other_app = ClientApplicationFactory(project=other_project, public=True, redirect_uris=REDIRECT_URI)
    MembershipFactory(project=other_project, user=patient.user, profile_type="Patient")
    signed_in_token(other_app)
    response = pa.get(url("sessions", project))
    logins = list(response.context["logins"])
    assert [login.client for login in logins] == [app]
    body = text(response)
    for column in ("User", "Client", "Scopes", "Signed in", "Last refresh"):
        assert f'<th scope="col">{column}</th>' in body
    assert "pat@example.org" in body and "Patient portal" in body and "openid profile offline_access" in body


def test_revoke_one_session_makes_its_token_fail(pa, project, app, patient):
    token = signed_in_token(app)
    other_token = signed_in_token(app)
    assert userinfo(token) == 200 and userinfo(other_token) == 200
    login = Login.objects.filter(project=project).order_by("created").first()
    response = pa.post(url("session-revoke", project, login.pk))
    assert response.status_code == 303 and response["Location"] == url("sessions", project)
    assert "Session revoked" in text(pa.get(response["Location"]))
    assert userinfo(token) == 401
    assert userinfo(other_token) == 200
    assert [x.pk for x in pa.get(url("sessions", project)).context["logins"]] != [login.pk]
    again = pa.post(url("session-revoke", project, login.pk), follow=True)
    assert "already revoked" in text(again)


def test_revoke_all_of_a_users_sessions_in_this_project_only(pa, project, other_project, app, patient):
    tokens = [signed_in_token(app), signed_in_token(app)]
    other_app = ClientApplicationFactory(project=other_project, public=True, redirect_uris=REDIRECT_URI)
    MembershipFactory(project=other_project, user=patient.user, profile_type="Patient")
    elsewhere = signed_in_token(other_app)
    response = pa.post(url("session-revoke-user", project, patient.user.pk), follow=True)
    assert "Revoked 2 sessions of pat@example.org." in text(response)
    assert [userinfo(t) for t in tokens] == [401, 401]
    assert userinfo(elsewhere) == 200
    assert list(response.context["logins"]) == []


def test_another_projects_session_is_404(pa, project, other_project, patient):
    other_app = ClientApplicationFactory(project=other_project, public=True, redirect_uris=REDIRECT_URI)
    MembershipFactory(project=other_project, user=patient.user, profile_type="Patient")
    token = signed_in_token(other_app)
    login = Login.objects.get(project=other_project)
    assert pa.post(url("session-revoke", project, login.pk)).status_code == 404
    assert userinfo(token) == 200
