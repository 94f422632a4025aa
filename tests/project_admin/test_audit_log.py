"""The Project Admin "Audit log" page: the project's events, filters, paging, isolation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from medplum_auth import audit, services
from medplum_auth.models import SecurityEvent
from project_admin.views.audit import PAGE_SIZE
from tests.factories import MembershipFactory, UserFactory

from .conftest import text, url

pytestmark = pytest.mark.django_db


@pytest.fixture
def events(project, other_project, admin_member):
    mine = services.create_access_policy(project, "Readers", [{"resourceType": "Patient"}])
    services.create_access_policy(other_project, "Secret other policy", [{"resourceType": "Patient"}])
    audit.record(audit.EventType.SIGNIN_FAILED, project=project, outcome=audit.Outcome.MINOR_FAILURE,
                 reason="invalid_credentials", operator_reason="unknown_email", actor_display="mallory@example.org")
    audit.record(audit.EventType.SIGNIN_SUCCEEDED, project=project, membership=admin_member, user=admin_member.user)
    return mine


def test_lists_the_projects_events_only(pa, project, events):
    response = pa.get(url("audit", project))
    assert response.status_code == 200
    body = text(response)
    assert "Audit log" in body and 'aria-current="page">Audit log' in body
    assert "Access policy created" in body and events.reference in body
    assert "mallory@example.org" in body and "invalid_credentials" in body
    assert "unknown_email" not in body  # the operator's reason stays in the Django admin
    assert "Secret other policy" not in body
    assert response["Content-Security-Policy"].startswith("default-src 'self'")


@pytest.mark.parametrize(("params", "shown", "hidden"), [
    ({"event_type": "signin.failed"}, ["mallory@example.org"], ["Access policy created", "Sign-in succeeded"]),
    ({"outcome": "failure"}, ["mallory@example.org"], ["Sign-in succeeded"]),
    ({"outcome": "success"}, ["Sign-in succeeded", "Access policy created"], ["mallory@example.org"]),
    ({"actor": "MALLORY"}, ["mallory@example.org"], ["Sign-in succeeded"]),
    ({"actor": "admin@example"}, ["Sign-in succeeded"], ["mallory@example.org"]),
])
def test_filters(pa, project, events, admin_member, params, shown, hidden):
    body = text(pa.get(url("audit", project), params))
    for needle in shown:
        assert needle in body, needle
    for needle in hidden:
        assert needle not in body.split("<tbody>", 1)[-1], needle


def test_actor_reference_and_date_filters(pa, project, events, admin_member):
    body = text(pa.get(url("audit", project), {"actor": admin_member.profile}))
    assert "Sign-in succeeded" in body and "mallory" not in body
    today = timezone.now().date()
    assert "Sign-in succeeded" in text(pa.get(url("audit", project), {"since": today, "until": today}))
    old = today - timedelta(days=3)
    assert "No events match." in text(pa.get(url("audit", project), {"until": old}))


@pytest.mark.parametrize("params", [
    {"since": "not-a-date"}, {"event_type": "nope"}, {"outcome": "maybe"}, {"actor": "a\x00b"},
    {"since": "2026-02-01", "until": "2026-01-01"}, {"page": "abc"}, {"page": "-5"}, {"page": "99999999999999"},
])
def test_bad_filters_are_not_a_500(pa, project, events, params):
    response = pa.get(url("audit", project), params)
    assert response.status_code in (200, 400)
    if response.status_code == 400:
        assert "No events match." in text(response)


def test_paging(pa, project):
    for n in range(PAGE_SIZE + 3):
        audit.record(audit.EventType.PROJECT_UPDATED, project=project, subject_display=f"marker-{n:03d}")
    first = text(pa.get(url("audit", project), {"event_type": "project.updated"}))
    assert "marker-052" in first and "marker-002" not in first and 'rel="next"' in first
    assert "event_type=project.updated&amp;page=2" in first
    second = text(pa.get(url("audit", project), {"event_type": "project.updated", "page": 2}))
    assert "marker-002" in second and "marker-052" not in second and 'rel="prev"' in second
    assert 'rel="next"' not in second


def test_another_projects_audit_log_is_404(pa, other_project, events):
    assert pa.get(url("audit", other_project)).status_code == 404


def test_non_admins_get_403(project, events):
    member = MembershipFactory(project=project, profile_type="Practitioner", admin=False)
    http = Client()
    http.force_login(member.user)
    assert http.get(url("audit", project)).status_code == 403


def test_project_admin_actions_name_the_admin(pa, project, admin_user):
    response = pa.post(url("client-create", project), {
        "name": "Audited app", "description": "", "redirect_uris": "https://app.example.org/callback",
        "access_policy": "", "client_type": "confidential"})
    assert response.status_code == 303
    event = SecurityEvent.objects.get(event_type="client.created", project=project)
    assert (event.actor_user, event.actor_display) == (str(admin_user.pk), admin_user.email)
    assert event.request_id and event.remote_addr == "127.0.0.1"


def test_superuser_sees_any_project(project, events):
    root = UserFactory(is_superuser=True, is_staff=True)
    http = Client()
    http.force_login(root)
    assert "Access policy created" in text(http.get(url("audit", project)))
