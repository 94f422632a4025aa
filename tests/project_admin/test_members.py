"""Members: invite with a one-time set-password link, validation messages, edit, remove."""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from medplum_auth.models import Login, ProjectMembership
from medplum_auth.signin import authenticate_email
from tests.factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory, UserFactory

from .conftest import shown_link, text, url

pytestmark = pytest.mark.django_db
PASSWORD = "A-long-Patient-passphrase-2026"


def invite(pa: Any, project: Any, **data: Any) -> Any:
    form = {"profile_type": "Patient", "first_name": "Pat", "last_name": "Lee", "email": "pat@example.org",
            "access_policy": "", **data}
    return pa.post(url("member-invite", project), form)


def set_password(link: str, password: str = PASSWORD) -> Any:
    browser = Client()
    path = urlsplit(link).path
    first = browser.get(path)
    # Django moves the token into the session and redirects to a URL without it.
    assert first.status_code == 302 and "/set-password/" in first["Location"]
    form = browser.get(first["Location"])
    assert form.context["validlink"] is True
    done = browser.post(first["Location"], {"new_password1": password, "new_password2": password})
    return done


def test_invite_form_fields_and_labels(pa, project, patient_policy):
    page = text(pa.get(url("member-invite", project)))
    for field in ("first_name", "last_name", "email", "access_policy", "admin"):
        assert f'for="id_{field}"' in page, field
    assert "<legend>Profile type</legend>" in page  # radio buttons grouped for screen readers
    assert 'value="RelatedPerson"' not in page
    assert 'name="password"' not in page
    assert patient_policy.name in page


def test_invite_patient_shows_the_set_password_link_once(pa, project, patient_policy):
    response = invite(pa, project, access_policy=str(patient_policy.pk))
    assert response.status_code == 303
    membership = ProjectMembership.objects.get(project=project, user__email="pat@example.org")
    assert (membership.profile_type, membership.profile_display, membership.access_policy, membership.admin) == (
        "Patient", "Pat Lee", patient_policy, False)
    assert not membership.user.has_usable_password()
    page = pa.get(response["Location"])
    assert "no-store" in page["Cache-Control"]
    link = shown_link(page)
    assert link.startswith("http://testserver/project-admin/set-password/")
    assert "Pat Lee was invited as a Patient." in text(page)
    assert link not in text(pa.get(response["Location"]))  # once
    assert link not in text(pa.get(url("member", project, membership.pk)))
    assert link not in text(pa.get(url("members", project)))

    done = set_password(link)
    assert done.status_code == 302 and done["Location"] == url("set-password-done")
    user, error = authenticate_email("pat@example.org", PASSWORD)
    assert error is None and user == membership.user
    # The link works once: after the password is set it is refused.
    again = Client().get(urlsplit(link).path, follow=True)
    assert again.context["validlink"] is False
    assert "no longer works" in text(again)


def test_set_password_form_validation(pa, project):
    link = shown_link(pa.get(invite(pa, project)["Location"]))
    browser = Client()
    moved = browser.get(urlsplit(link).path)["Location"]
    mismatch = browser.post(moved, {"new_password1": PASSWORD, "new_password2": PASSWORD + "x"})
    assert mismatch.status_code == 200
    assert "The two password fields didn’t match." in html.unescape(text(mismatch))
    weak = browser.post(moved, {"new_password1": "password", "new_password2": "password"})
    assert "This password is too common." in html.unescape(text(weak))
    assert weak["X-Frame-Options"] == "DENY" and "no-store" in weak["Cache-Control"]


def test_invite_practitioner_admin(pa, project):
    response = invite(pa, project, profile_type="Practitioner", email="doc@example.org", admin="on",
                      first_name="Dee", last_name="Doc")
    assert response.status_code == 303
    membership = ProjectMembership.objects.get(project=project, user__email="doc@example.org")
    assert membership.profile_type == "Practitioner" and membership.admin


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"email": "not-an-email"}, "email", "Enter a valid email address."),
    ({"first_name": ""}, "first_name", "This field is required."),
    ({"last_name": ""}, "last_name", "This field is required."),
    ({"profile_type": "RelatedPerson"}, "profile_type",
     "Select a valid choice. RelatedPerson is not one of the available choices."),
    ({"access_policy": "00000000-0000-0000-0000-000000000000"}, "access_policy",
     "Select a valid choice. That choice is not one of the available choices."),
])
def test_invite_validation_messages(pa, project, data, field, message):
    response = invite(pa, project, **data)
    assert response.status_code == 400
    assert response.context["form"].errors[field] == [message]
    assert html.escape(message) in text(response)
    assert not ProjectMembership.objects.filter(project=project, profile_type="Patient").exists()


def test_duplicate_invite_is_refused(pa, project):
    assert invite(pa, project).status_code == 303
    response = invite(pa, project, first_name="Again")
    assert response.status_code == 400
    assert response.context["form"].errors["email"] == ["pat@example.org is already a Patient member of this project."]
    assert 'value="Again"' in text(response)
    assert ProjectMembership.objects.filter(project=project, user__email="pat@example.org").count() == 1


def test_inviting_an_existing_user_gives_no_link(pa, project, other_project):
    user = UserFactory(email="known@example.org", username="known@example.org")
    MembershipFactory(project=other_project, user=user)
    response = invite(pa, project, email="known@example.org")
    assert response.status_code == 303 and response["Location"] == url("members", project)
    body = text(pa.get(response["Location"]))
    assert "already had an account" in body
    user.refresh_from_db()
    assert user.has_usable_password()


def test_new_link_only_for_users_without_password_in_this_project_only(pa, project, other_project):
    response = invite(pa, project)
    membership = ProjectMembership.objects.get(project=project, user__email="pat@example.org")
    pa.get(response["Location"])  # the first link is shown
    new = pa.post(url("member-new-link", project, membership.pk))
    assert new.status_code == 303
    assert shown_link(pa.get(new["Location"]))
    # Also a member of another project: the admin could take over that account; refused.
    MembershipFactory(project=other_project, user=membership.user)
    refused = pa.post(url("member-new-link", project, membership.pk), follow=True)
    assert "can only be made" in text(refused)
    assert 'id="set-password-link"' not in text(refused)
    # A user with a password: refused too.
    member = MembershipFactory(project=project)
    refused = pa.post(url("member-new-link", project, member.pk), follow=True)
    assert "can only be made" in text(refused)


def test_member_list_columns(pa, project, patient_policy, admin_member):
    member = MembershipFactory(project=project, profile_display="Pat Lee", access_policy=patient_policy)
    client = ClientApplicationFactory(project=project)
    signed_in = timezone.now()
    Login.objects.create(user=member.user, client=client, project=project, membership=member, auth_time=signed_in)
    response = pa.get(url("members", project))
    body = text(response)
    for column in ("Name", "Profile", "Email", "Admin", "Access policy", "Active", "Last sign-in"):
        assert f'<th scope="col">{column}</th>' in body
    assert "Pat Lee" in body and member.user.email in body and patient_policy.name in body
    row = next(m for m in response.context["members"] if m.pk == member.pk)
    assert row.last_sign_in == signed_in
    assert "never" in body  # the admin has not signed in through a client


def test_edit_member(pa, project, patient_policy):
    member = MembershipFactory(project=project, profile_display="Pat Lee")
    client = ClientApplicationFactory(project=project)
    login = Login.objects.create(user=member.user, client=client, project=project, membership=member,
                                 auth_time=timezone.now(), granted_at=timezone.now())
    response = pa.post(url("member", project, member.pk), {"access_policy": str(patient_policy.pk), "admin": "on",
                                                           "access_parameters": "{}"})
    assert response.status_code == 303
    assert "Member Pat Lee saved." in text(pa.get(response["Location"]))
    member.refresh_from_db()
    login.refresh_from_db()
    assert (member.access_policy, member.admin, member.active) == (patient_policy, True, False)
    assert login.revoked_at is not None  # deactivating revokes the sessions
    bad = pa.post(url("member", project, member.pk), {"access_parameters": "[1]", "active": "on"})
    assert bad.status_code == 400
    assert bad.context["form"].errors["access_parameters"] == ["Parameters must map names to strings."]
    member.refresh_from_db()
    assert member.active is False


def test_admin_cannot_lock_themselves_out(pa, project, admin_member):
    response = pa.post(url("member", project, admin_member.pk), {"active": "on", "access_parameters": "{}"})
    assert response.status_code == 400
    assert "You cannot remove your own admin access" in text(response)
    admin_member.refresh_from_db()
    assert admin_member.admin
    refused = pa.post(url("member-remove", project, admin_member.pk), follow=True)
    assert "You cannot remove yourself" in text(refused)
    assert ProjectMembership.objects.filter(pk=admin_member.pk).exists()


def test_remove_member(pa, project):
    member = MembershipFactory(project=project, profile_display="Gone Soon")
    confirm = pa.get(url("member-remove", project, member.pk))
    assert "Remove Gone Soon from" in text(confirm)
    response = pa.post(url("member-remove", project, member.pk))
    assert response.status_code == 303 and response["Location"] == url("members", project)
    assert "Gone Soon was removed from the project" in text(pa.get(response["Location"]))
    assert not ProjectMembership.objects.filter(pk=member.pk).exists()
    assert get_user_model().objects.filter(pk=member.user_id).exists()


def test_invite_uses_the_projects_default_policy(pa, project):
    from medplum_auth import services

    default = AccessPolicyFactory(project=project, name="Default patient policy")
    services.set_default_access_policy(project, "Patient", default)
    invite(pa, project)
    assert ProjectMembership.objects.get(project=project, profile_type="Patient").access_policy == default
