"""Project Admin and the second factor: its sign-in asks for it, admins require it for a project
and reset a member's, and the Django admin signs in through the same sign-in."""

from __future__ import annotations

import pyotp
import pytest
from django.test import Client
from django.utils import timezone

from medplum_auth import mfa
from medplum_auth.keys import decrypt_secret
from medplum_auth.models import SecurityEvent, TotpDevice
from tests.factories import DEFAULT_PASSWORD, MembershipFactory, UserFactory

from .conftest import text, url

pytestmark = [pytest.mark.django_db, pytest.mark.spec("issue: MFA in Project Admin")]


def enroll(user) -> list[str]:
    mfa.start_totp(user)
    return mfa.confirm_totp(user, totp(user))


def totp(user, offset: int = 0) -> str:
    secret = decrypt_secret(TotpDevice.objects.get(user=user).secret, mfa.SECRET_PURPOSE)
    return pyotp.TOTP(secret).at(timezone.now(), counter_offset=offset)


def test_project_admin_sign_in_asks_for_the_second_factor(project, admin_user):
    enroll(admin_user)
    http = Client()
    response = http.post(url("login"), {"username": "admin@example.org", "password": DEFAULT_PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/oauth2/mfa"
    assert "_auth_user_id" not in http.session
    assert http.get(url("clients", project))["Location"].startswith("/project-admin/login/")  # not signed in
    page = http.get("/oauth2/mfa")
    assert "to continue to <strong>Project Admin</strong>" in text(page)
    done = http.post("/oauth2/mfa", {"code": totp(admin_user, 1)})
    assert done.status_code == 302 and done["Location"] == "/project-admin/"
    assert http.session["medplum_auth_amr"] == "pwd otp mfa"
    assert http.get(url("clients", project)).status_code == 200


def test_project_admin_sign_in_without_mfa_is_unchanged(project, admin_user):
    http = Client()
    response = http.post(url("login"), {"username": "admin@example.org", "password": DEFAULT_PASSWORD})
    assert response["Location"] == "/project-admin/"
    assert http.session["medplum_auth_amr"] == "pwd"


def test_require_mfa_for_a_project(pa, project, admin_user):
    response = pa.post(url("project-mfa", project), {"mfa_required": "on"})
    assert response.status_code == 303
    project.refresh_from_db()
    assert project.mfa_required is True
    event = SecurityEvent.objects.get(event_type="project.updated")
    assert event.detail == {"fields": ["mfa_required"]} and event.actor_user == str(admin_user.pk)
    page = pa.get(url("members", project))
    assert 'name="mfa_required" checked' in text(page)
    # The admin's own next sign-in makes them enroll.
    http = Client()
    assert http.post(url("login"), {"username": "admin@example.org",
                                    "password": DEFAULT_PASSWORD})["Location"] == "/oauth2/mfa"
    assert "Set up two-step sign-in" in text(http.get("/oauth2/mfa"))
    pa.post(url("project-mfa", project), {})
    project.refresh_from_db()
    assert project.mfa_required is False


def test_admin_resets_a_members_second_factors(pa, project):
    member = MembershipFactory(project=project, profile_type="Patient", profile_display="Pat Lee")
    enroll(member.user)
    page = pa.get(url("member", project, member.pk))
    assert "on (authenticator app)" in text(page) and "Reset two-step sign-in" in text(page)
    response = pa.post(url("member-mfa-reset", project, member.pk))
    assert response.status_code == 303
    assert mfa.factors(member.user) == set() and mfa.remaining_recovery_codes(member.user) == 0
    event = SecurityEvent.objects.get(event_type="mfa.disabled")
    assert event.detail == {"reset": True, "factors": 1} and event.subject == f"User/{member.user_id}"
    assert event.project_id == project.pk


def test_admin_cannot_reset_a_user_of_another_project(pa, project, other_project):
    user = UserFactory()
    member = MembershipFactory(project=project, user=user, profile_type="Patient")
    MembershipFactory(project=other_project, user=user, profile_type="Patient")
    enroll(user)
    assert "Reset two-step sign-in" not in text(pa.get(url("member", project, member.pk)))
    response = pa.post(url("member-mfa-reset", project, member.pk))
    assert response.status_code == 303
    assert mfa.factors(user) == {"otp"}


def test_reset_needs_a_project_admin(project, other_project):
    member = MembershipFactory(project=project, profile_type="Patient")
    outsider = MembershipFactory(project=other_project, profile_type="Practitioner", admin=True)
    enroll(member.user)
    http = Client()
    http.force_login(outsider.user)
    assert http.post(url("member-mfa-reset", project, member.pk)).status_code == 404  # not their project
    assert mfa.factors(member.user) == {"otp"}


def test_django_admin_signs_in_through_the_second_factor(db):
    superuser = UserFactory(email="root@example.org", username="root@example.org", is_staff=True,
                            is_superuser=True)
    enroll(superuser)
    http = Client()
    login_page = http.get("/admin/login/?next=/admin/")
    assert login_page.status_code == 200 and 'name="next" value="/admin/"' in text(login_page)
    response = http.post("/oauth2/account/signin", {"email": "root@example.org", "password": DEFAULT_PASSWORD,
                                                    "next": "/admin/"})
    assert response["Location"] == "/oauth2/mfa"
    assert http.get("/admin/")["Location"].startswith("/admin/login/")
    done = http.post("/oauth2/mfa", {"code": totp(superuser, 1)})
    assert done["Location"] == "/admin/"
    assert http.get("/admin/").status_code == 200


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "javascript:alert(1)"])
def test_account_sign_in_never_redirects_off_site(db, target):
    user = UserFactory(email="u@example.org", username="u@example.org")
    http = Client()
    response = http.post("/oauth2/account/signin", {"email": user.email, "password": DEFAULT_PASSWORD,
                                                    "next": target})
    assert response["Location"] == "/oauth2/account"
