"""Who may see what: admins of the project, superusers everywhere; 403 for others; 404 across projects."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from medplum_auth import services
from medplum_auth.models import ClientApplication, ProjectMembership
from project_admin.security import CONTENT_SECURITY_POLICY
from tests.factories import (
    AccessPolicyFactory,
    ClientApplicationFactory,
    MembershipFactory,
    UserFactory,
)

from .conftest import url

pytestmark = pytest.mark.django_db


@pytest.fixture
def objects(project, patient_policy, admin_member):
    client = ClientApplicationFactory(project=project, access_policy=patient_policy)
    return {"client": client, "policy": patient_policy, "member": admin_member}


def page_urls(project: Any, objects: dict[str, Any]) -> list[str]:
    """Every GET page of one project."""
    return [
        url("clients", project), url("client-create", project), url("client", project, objects["client"].pk),
        url("client-retire", project, objects["client"].pk), url("client-delete", project, objects["client"].pk),
        url("policies", project), url("policy-create", project), url("policy", project, objects["policy"].pk),
        url("preview", project), url("members", project), url("member-invite", project),
        url("member", project, objects["member"].pk), url("member-remove", project, objects["member"].pk),
        url("sessions", project),
    ]


def test_anonymous_is_sent_to_the_admin_sign_in(client, project, objects):
    for page in [url("index"), *page_urls(project, objects)]:
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"].startswith("/project-admin/login/?next="), response["Location"]


def test_anonymous_post_changes_nothing(client, project, objects):
    response = client.post(url("client-status", project, objects["client"].pk), {"status": "off"})
    assert response.status_code == 302
    objects["client"].refresh_from_db()
    assert objects["client"].status == "active"


def test_admin_sees_every_page_with_security_headers(pa, project, objects):
    for page in [url("index"), *page_urls(project, objects)]:
        response = pa.get(page, follow=page == url("index"))
        assert response.status_code == 200, page
        assert response["X-Frame-Options"] == "DENY"
        assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
        assert response["Referrer-Policy"] == "same-origin"
        assert "no-store" in response["Cache-Control"]


def test_login_page_has_security_headers(client):
    response = client.get(url("login"))
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize("setup", ["no membership", "member not admin", "inactive admin membership"])
def test_signed_in_non_admins_get_403(project, objects, setup):
    user = UserFactory()
    if setup == "member not admin":
        MembershipFactory(project=project, user=user, profile_type="Practitioner", admin=False)
    elif setup == "inactive admin membership":
        MembershipFactory(project=project, user=user, profile_type="Practitioner", admin=True, active=False)
    http = Client()
    http.force_login(user)
    for page in [url("index"), *page_urls(project, objects)]:
        response = http.get(page)
        assert response.status_code == 403, page
        assert response["X-Frame-Options"] == "DENY"
    response = http.post(url("client-status", project, objects["client"].pk), {"status": "off"})
    assert response.status_code == 403
    objects["client"].refresh_from_db()
    assert objects["client"].status == "active"


def test_another_projects_pages_are_404(pa, other_project):
    other_policy = AccessPolicyFactory(project=other_project)
    other_objects = {"client": ClientApplicationFactory(project=other_project), "policy": other_policy,
                     "member": MembershipFactory(project=other_project)}
    for page in page_urls(other_project, other_objects):
        assert pa.get(page).status_code == 404, page


def test_another_projects_objects_under_own_project_are_404(pa, project, other_project):
    other_client = ClientApplicationFactory(project=other_project)
    other_policy = AccessPolicyFactory(project=other_project)
    other_member = MembershipFactory(project=other_project)
    for page in [url("client", project, other_client.pk), url("policy", project, other_policy.pk),
                 url("member", project, other_member.pk), url("client-delete", project, other_client.pk)]:
        assert pa.get(page).status_code == 404, page
    # Actions on them are 404 too, and change nothing.
    assert pa.post(url("client-status", project, other_client.pk), {"status": "off"}).status_code == 404
    assert pa.post(url("client-rotate", project, other_client.pk)).status_code == 404
    assert pa.post(url("client-delete", project, other_client.pk)).status_code == 404
    assert pa.post(url("member-remove", project, other_member.pk)).status_code == 404
    assert pa.post(url("member", project, other_member.pk), {"admin": "on", "active": "on"}).status_code == 404
    assert pa.post(url("policy", project, other_policy.pk), {"name": "x", "resources": "[]"}).status_code == 404
    other_client.refresh_from_db()
    assert other_client.status == "active"
    assert ClientApplication.objects.filter(pk=other_client.pk).exists()
    assert ProjectMembership.objects.filter(pk=other_member.pk).exists()


def test_another_projects_sessions_cannot_be_revoked(pa, project, other_project):
    other_user = MembershipFactory(project=other_project).user
    assert pa.post(url("session-revoke-user", project, other_user.pk)).status_code == 404
    assert pa.post(url("session-revoke-user", project, "not-a-pk")).status_code == 404


def test_preview_offers_only_this_projects_subjects(pa, project, other_project):
    other_member = MembershipFactory(project=other_project)
    response = pa.get(url("preview", project), {"subject": f"member:{other_member.pk}"})
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()


def test_superuser_administers_every_project(project, other_project, objects):
    root = UserFactory(is_superuser=True, is_staff=True)
    http = Client()
    http.force_login(root)
    other_objects = {"client": ClientApplicationFactory(project=other_project),
                     "policy": AccessPolicyFactory(project=other_project),
                     "member": MembershipFactory(project=other_project)}
    for page in [*page_urls(project, objects), *page_urls(other_project, other_objects)]:
        assert http.get(page).status_code == 200, page
    index = http.get(url("index"))
    assert index.status_code == 200  # several projects: the chooser
    assert project.name in index.content.decode() and other_project.name in index.content.decode()
    response = http.post(url("client-status", other_project, other_objects["client"].pk), {"status": "off"})
    assert response.status_code == 303
    other_objects["client"].refresh_from_db()
    assert other_objects["client"].status == "off"


def test_switcher_lists_only_administered_projects(project, other_project, objects):
    third = services.create_project("Third")
    user = objects["member"].user
    MembershipFactory(project=other_project, user=user, profile_type="Practitioner", admin=True)
    http = Client()
    http.force_login(user)
    page = http.get(url("clients", project)).content.decode()
    assert 'id="project-switcher"' in page
    assert other_project.name in page and third.name not in page
    response = http.get(url("switch"), {"project": str(other_project.pk), "section": "members"})
    assert response.status_code == 302
    assert response["Location"] == url("members", other_project)
    assert http.get(url("switch"), {"project": str(third.pk)}).status_code == 404
    assert http.get(url("switch"), {"project": "nope"}).status_code == 404


def test_single_project_admin_lands_on_clients_without_switcher(pa, project):
    response = pa.get(url("index"))
    assert response.status_code == 302
    assert response["Location"] == url("clients", project)
    assert 'id="project-switcher"' not in pa.get(url("clients", project)).content.decode()


def test_sign_in_with_email_and_password(client, admin_user, project):
    from tests.factories import DEFAULT_PASSWORD

    page = client.get(url("login"))
    assert 'for="id_username"' in page.content.decode()
    bad = client.post(url("login"), {"username": admin_user.email, "password": "wrong"})
    assert bad.status_code == 200
    assert "Email or password is invalid" in bad.content.decode()
    good = client.post(url("login"), {"username": admin_user.email, "password": DEFAULT_PASSWORD,
                                      "next": url("members", project)})
    assert good.status_code == 302
    assert good["Location"] == url("members", project)
    assert client.session["_auth_user_id"] == str(admin_user.pk)
    assert client.get(url("members", project)).status_code == 200
    out = client.post(url("logout"))
    assert out.status_code == 302
    assert client.get(url("members", project)).status_code == 302
