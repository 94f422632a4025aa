"""The Django admin: every write goes through the services, and client secrets are shown once."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from medplum_auth import onetime, services
from medplum_auth.admin import ClientApplicationAdmin
from medplum_auth.forms import AccessPolicyForm, ClientCreateForm, MembershipInviteForm
from medplum_auth.models import (
    AccessPolicy,
    ClientApplication,
    DefaultAccessPolicy,
    Login,
    Project,
    ProjectMembership,
    SigningKey,
)
from medplum_auth.secrets import DIGEST_PREFIX
from tests.factories import (
    AccessPolicyFactory,
    ClientApplicationFactory,
    MembershipFactory,
    ProjectFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

SECRET_INPUT_RE = re.compile(r'id="client-secret"[^>]*value="([0-9a-f]{64})"')


def url(model: str, view: str, *args: Any) -> str:
    return reverse(f"admin:medplum_auth_{model}_{view}", args=args)


def action(client: Any, model: str, name: str, *objects: Any) -> Any:
    return client.post(url(model, "changelist"), {
        "action": name, "index": "0", "_selected_action": [str(obj.pk) for obj in objects]}, follow=True)


def text(response: Any) -> str:
    return response.content.decode()


def shown_secret(response: Any) -> str:
    match = SECRET_INPUT_RE.search(text(response))
    assert match, "the page shows no 64-hex secret"
    return match.group(1)


def row_values(obj: Any) -> list[str]:
    """Every column of the row as text, as stored."""
    obj = type(obj)._default_manager.get(pk=obj.pk)
    values = []
    for field in obj._meta.concrete_fields:
        value = getattr(obj, field.attname)
        values.append(json.dumps(value) if isinstance(value, dict | list) else str(value))
    return values


def client_post_data(project: Project, **overrides: Any) -> dict[str, Any]:
    data = {
        "project": str(project.pk),
        "name": "Lab portal",
        "description": "Results viewer",
        "redirect_uris": "https://lab.example.org/callback\nhttp://localhost:3000/cb",
        "access_policy": "",
        "client_type": ClientApplication.CLIENT_CONFIDENTIAL,
        "access_token_lifetime": "",
        "refresh_token_lifetime": "",
        "allowed_origins": "https://lab.example.org",
        "post_logout_redirect_uris": "",
        "launch_uri": "",
        "jwks_uri": "",
    }
    data.update(overrides)
    return data


@pytest.fixture
def signing_key(db: Any) -> SigningKey:
    return services.ensure_signing_key()


# --- registration and access ---------------------------------------------------------------------


def test_our_client_admin_replaces_dot_application_admin():
    import oauth2_provider.admin as dot_admin
    from oauth2_provider.models import get_access_token_model, get_refresh_token_model

    assert isinstance(admin.site._registry[ClientApplication], ClientApplicationAdmin)
    assert not isinstance(admin.site._registry[ClientApplication], dot_admin.ApplicationAdmin)
    # Tokens live on Login; DOT's empty token tables are not offered to operators.
    assert not admin.site.is_registered(get_access_token_model())
    assert not admin.site.is_registered(get_refresh_token_model())


@pytest.mark.parametrize("model", ["clientapplication", "accesspolicy", "project", "projectmembership",
                                   "signingkey"])
def test_non_staff_users_are_sent_to_login(client, model):
    changelist = url(model, "changelist")
    assert client.get(changelist).status_code == 302
    client.force_login(UserFactory())
    response = client.get(changelist)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_changelist_and_change_pages_render(admin_client, client_app, policy, patient_membership, signing_key):
    DefaultAccessPolicy.objects.create(project=client_app.project, profile_type="Patient", access_policy=policy)
    objects = {
        "project": client_app.project,
        "accesspolicy": policy,
        "projectmembership": patient_membership,
        "clientapplication": client_app,
        "signingkey": signing_key,
    }
    for model, obj in objects.items():
        assert admin_client.get(url(model, "changelist")).status_code == 200, model
        assert admin_client.get(url(model, "change", obj.pk)).status_code == 200, model
        assert admin_client.get(url(model, "changelist"), {"q": "x"}).status_code == 200, model
    for model in ("project", "accesspolicy", "projectmembership", "clientapplication"):
        assert admin_client.get(url(model, "add")).status_code == 200, model
    assert admin_client.get(url("signingkey", "add")).status_code == 403
    for model in ("login", "consent"):
        assert admin_client.get(url(model, "changelist")).status_code == 200, model


# --- client applications -------------------------------------------------------------------------


def test_create_client_shows_the_secret_once(admin_client, project, policy):
    posted = admin_client.post(url("clientapplication", "add"),
                               client_post_data(project, access_policy=str(policy.pk)))

    assert posted.status_code == 303
    client = ClientApplication.objects.get(name="Lab portal")
    assert posted["Location"].startswith(url("clientapplication", "change", client.pk).removesuffix("change/")
                                         + "secret/")
    response = admin_client.get(posted["Location"])
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    assert "Client created" in text(response)
    secret = shown_secret(response)
    assert secret not in text(posted) and secret not in posted["Location"]
    assert client.client_id in text(response)
    assert client.project == project and client.access_policy == policy
    assert client.redirect_uri_list == ["https://lab.example.org/callback", "http://localhost:3000/cb"]
    assert client.client_secret.startswith(DIGEST_PREFIX)
    assert client.verify_secret(secret)
    assert not any(secret in value for value in row_values(client))
    assert not LogEntry.objects.filter(change_message__contains=secret).exists()
    assert not LogEntry.objects.filter(object_repr__contains=secret).exists()

    digest = client.client_secret
    for page in (url("clientapplication", "change", client.pk), url("clientapplication", "changelist"),
                 url("clientapplication", "history", client.pk)):
        body = text(admin_client.get(page))
        assert secret not in body
        assert digest not in body and digest.removeprefix(DIGEST_PREFIX) not in body


def test_change_page_shows_secret_state_not_secret(admin_client, client_app):
    retiring_re = re.compile(r'field-has_retiring_secret.*?<div class="readonly">(\w+)</div>', re.S)
    body = text(admin_client.get(url("clientapplication", "change", client_app.pk)))
    assert retiring_re.search(body).group(1) == "no"
    services.rotate_client_secret(client_app)
    client_app.refresh_from_db()
    body = text(admin_client.get(url("clientapplication", "change", client_app.pk)))
    assert retiring_re.search(body).group(1) == "yes"
    for digest in (client_app.client_secret, client_app.retiring_secret):
        assert digest.removeprefix(DIGEST_PREFIX) not in body
    assert 'name="client_secret"' not in body and 'name="retiring_secret"' not in body


def test_service_error_on_create_lands_on_form(admin_client, project, monkeypatch):
    from django.core.exceptions import ValidationError

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ValidationError({"name": ["Taken just now."], "user": ["Not a form field."]})

    monkeypatch.setattr(services, "create_client", refuse)
    response = admin_client.post(url("clientapplication", "add"), client_post_data(project))
    assert response.status_code == 200
    assert "Taken just now." in text(response) and "user: Not a form field." in text(response)
    assert not ClientApplication.objects.exists()


def test_public_client_has_no_secret_page(admin_client, project):
    response = admin_client.post(url("clientapplication", "add"),
                                 client_post_data(project, client_type=ClientApplication.CLIENT_PUBLIC))
    client = ClientApplication.objects.get(name="Lab portal")
    assert response.status_code == 302
    assert client.client_secret == "" and not client.is_confidential


@pytest.mark.parametrize(("uri", "message"), [
    ("http://evil.example/cb", "must use https"),
    ("/callback", "must be an absolute URL"),
    ("https://lab.example.org/cb#frag", "must not contain a fragment"),
])
def test_create_client_rejects_bad_redirect_uri(admin_client, project, uri, message):
    response = admin_client.post(url("clientapplication", "add"), client_post_data(project, redirect_uris=uri))
    assert response.status_code == 200
    assert message in text(response)
    assert not ClientApplication.objects.exists()


def test_create_client_rejects_policy_of_another_project(admin_client, project):
    foreign = AccessPolicyFactory(project=ProjectFactory())
    response = admin_client.post(url("clientapplication", "add"),
                                 client_post_data(project, access_policy=str(foreign.pk)))
    assert response.status_code == 200
    assert "The access policy belongs to another project." in text(response)
    assert not ClientApplication.objects.exists()


def test_create_client_requires_name_and_pkce_for_public(admin_client, project):
    response = admin_client.post(url("clientapplication", "add"), client_post_data(
        project, name="", client_type=ClientApplication.CLIENT_PUBLIC, pkce_optional="on"))
    body = text(response)
    assert "This field is required." in body
    assert "Public clients must use PKCE." in body
    assert not ClientApplication.objects.exists()


def test_change_client_keeps_secret(admin_client, client_app):
    digest = client_app.client_secret
    response = admin_client.post(url("clientapplication", "change", client_app.pk), {
        "name": "Renamed", "description": "", "status": "active",
        "redirect_uris": "https://app.example.org/callback", "post_logout_redirect_uris": "",
        "allowed_origins": "", "launch_uri": "", "access_policy": "", "authorization_grant_type": "authorization-code",
        "access_token_lifetime": "", "refresh_token_lifetime": "", "jwks_uri": "", "jwks": "null",
        "sign_in_text": "",
    })
    assert response.status_code == 302, text(response)
    client_app.refresh_from_db()
    assert client_app.name == "Renamed"
    assert client_app.client_secret == digest


def test_rotate_and_retire_secret_actions(admin_client, client_app):
    old = client_app.plaintext_secret
    response = action(admin_client, "clientapplication", "rotate_secret", client_app)

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    new = shown_secret(response)
    assert new != old
    client_app.refresh_from_db()
    assert client_app.verify_secret(new) and client_app.verify_secret(old)
    assert client_app.secret_rotated_at is not None
    assert not any(new in value for value in row_values(client_app))

    action(admin_client, "clientapplication", "retire_old_secret", client_app)
    client_app.refresh_from_db()
    assert client_app.verify_secret(new)
    assert not client_app.verify_secret(old)
    assert client_app.retiring_secret == ""


def secret_entries(client: Any) -> dict[str, Any]:
    return {key: value for key, value in client.session.items() if key.startswith(onetime.SESSION_PREFIX)}


def rotate(client: Any, client_app: ClientApplication) -> Any:
    """The rotate action's POST, without following the redirect."""
    return client.post(url("clientapplication", "changelist"), {
        "action": "rotate_secret", "index": "0", "_selected_action": [str(client_app.pk)]})


def test_rotate_is_post_redirect_get_and_shows_the_secret_once(admin_client, client_app):
    posted = rotate(admin_client, client_app)

    assert posted.status_code == 303
    assert not SECRET_INPUT_RE.search(text(posted))
    location = posted["Location"]
    client_app.refresh_from_db()
    assert client_app.secret_rotated_at is not None

    first = admin_client.get(location)
    assert first.status_code == 200
    assert "no-store" in first["Cache-Control"]
    secret = shown_secret(first)
    assert client_app.verify_secret(secret) and secret != client_app.plaintext_secret
    assert secret not in location
    assert "Client secret rotated" in text(first)
    assert not secret_entries(admin_client)
    assert secret not in json.dumps(dict(admin_client.session.items()))

    second = admin_client.get(location)
    assert second.status_code == 200
    assert "no-store" in second["Cache-Control"]
    assert not SECRET_INPUT_RE.search(text(second)) and secret not in text(second)
    assert "This secret was already shown; rotate again to get a new one." in text(second)
    client_app.refresh_from_db()
    assert client_app.verify_secret(secret)  # the reload rotated nothing


def test_secret_waits_in_the_session_encrypted(admin_client, client_app):
    """Until its GET, the session holds the secret encrypted and the URL holds the key; neither alone reveals it."""
    location = rotate(admin_client, client_app)["Location"]
    token = location.rstrip("/").rsplit("/", 1)[1]
    stored = json.dumps(secret_entries(admin_client))
    assert len(secret_entries(admin_client)) == 1
    assert token not in json.dumps(dict(admin_client.session.items()))
    secret = shown_secret(admin_client.get(location))
    assert secret not in stored


def test_secret_page_refuses_other_clients_tokens_and_posts(admin_client, project):
    first, second = ClientApplicationFactory(project=project), ClientApplicationFactory(project=project)
    location = rotate(admin_client, first)["Location"]
    token = location.rstrip("/").rsplit("/", 1)[1]

    assert admin_client.post(location).status_code == 405
    assert len(secret_entries(admin_client)) == 1
    other = admin_client.get(url("clientapplication", "secret", second.pk, token))
    assert not SECRET_INPUT_RE.search(text(other))
    assert "already shown" in text(other)
    assert not secret_entries(admin_client)  # popped: a wrong guess burns the token
    assert "already shown" in text(admin_client.get(location))
    forged = admin_client.get(url("clientapplication", "secret", first.pk, "not-a-key"))
    assert forged.status_code == 200 and "already shown" in text(forged)


def test_expired_secret_is_not_shown(admin_client, client_app, monkeypatch):
    import medplum_auth.onetime as admin_module

    location = rotate(admin_client, client_app)["Location"]
    real_time = admin_module.time.time
    monkeypatch.setattr(admin_module.time, "time", lambda: real_time() + admin_module.DISPLAY_SECONDS + 1)
    response = admin_client.get(location)
    assert not SECRET_INPUT_RE.search(text(response))
    assert "already shown" in text(response)


def test_secret_page_needs_change_permission(client, client_app):
    from django.contrib.auth.models import Permission

    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_clientapplication"))
    client.force_login(viewer)
    response = client.get(url("clientapplication", "secret", client_app.pk, "whatever"))
    assert response.status_code == 403


def test_rotate_needs_exactly_one_confidential_client(admin_client, project):
    first, second = ClientApplicationFactory(project=project), ClientApplicationFactory(project=project)
    response = action(admin_client, "clientapplication", "rotate_secret", first, second)
    assert "Select exactly one client" in text(response)
    public = ClientApplicationFactory(project=project, public=True)
    response = action(admin_client, "clientapplication", "rotate_secret", public)
    assert "Public clients have no secret." in text(response)
    first.refresh_from_db()
    assert first.verify_secret(first.plaintext_secret) and first.retiring_secret == ""


def make_login(client_app: ClientApplication, **kwargs: Any) -> Login:
    return Login.objects.create(client=client_app, project=client_app.project, auth_time=timezone.now(), **kwargs)


def test_disable_and_enable_actions(admin_client, client_app):
    login = make_login(client_app)
    response = action(admin_client, "clientapplication", "disable_clients", client_app)
    assert "Disabled 1 client and revoked its logins." in text(response)
    client_app.refresh_from_db()
    login.refresh_from_db()
    assert client_app.status == ClientApplication.Status.OFF
    assert login.revoked_reason == "client_disabled" and login.revoked_at is not None
    action(admin_client, "clientapplication", "enable_clients", client_app)
    client_app.refresh_from_db()
    login.refresh_from_db()
    assert client_app.status == ClientApplication.Status.ACTIVE
    assert login.revoked_at is not None  # enabling does not bring old logins back


def change_client_data(client_app: ClientApplication, **overrides: Any) -> dict[str, Any]:
    return {
        "name": client_app.name, "description": "", "status": client_app.status,
        "redirect_uris": client_app.redirect_uris, "post_logout_redirect_uris": "", "allowed_origins": "",
        "launch_uri": "", "access_policy": "", "authorization_grant_type": "authorization-code",
        "access_token_lifetime": "", "refresh_token_lifetime": "", "jwks_uri": "", "jwks": "null",
        "sign_in_text": "", **overrides,
    }


def test_change_client_goes_through_update_client(admin_client, client_app, monkeypatch):
    calls: list[dict[str, Any]] = []
    real = services.update_client

    def spy(client: ClientApplication, **fields: Any) -> ClientApplication:
        calls.append(fields)
        return real(client, **fields)

    monkeypatch.setattr(services, "update_client", spy)
    login = make_login(client_app)
    response = admin_client.post(url("clientapplication", "change", client_app.pk),
                                 change_client_data(client_app, status="off"))
    assert response.status_code == 302, text(response)
    assert calls and calls[0]["status"] == "off"
    assert "client_secret" not in calls[0] and "project" not in calls[0]
    login.refresh_from_db()
    assert login.revoked_reason == "client_disabled"


def test_change_client_keeps_a_secret_rotated_meanwhile(admin_client, client_app):
    change = url("clientapplication", "change", client_app.pk)
    admin_client.get(change)
    new = services.rotate_client_secret(ClientApplication.objects.get(pk=client_app.pk))
    # The admin loads the client again, but the service writes only changed fields anyway.
    response = admin_client.post(change, change_client_data(client_app, name="Renamed"))
    assert response.status_code == 302
    client_app.refresh_from_db()
    assert client_app.name == "Renamed" and client_app.verify_secret(new)


def test_delete_client_goes_through_service(admin_client, project, monkeypatch):
    deleted: list[str] = []
    real = services.delete_client

    def spy(client: ClientApplication) -> None:
        deleted.append(client.client_id)
        real(client)

    monkeypatch.setattr(services, "delete_client", spy)
    single, first, second = (ClientApplicationFactory(project=project) for _ in range(3))
    make_login(single)
    make_login(first)
    response = admin_client.post(url("clientapplication", "delete", single.pk), {"post": "yes"})
    assert response.status_code == 302
    admin_client.post(url("clientapplication", "changelist"), {
        "action": "delete_selected", "post": "yes", "_selected_action": [str(first.pk), str(second.pk)]})
    assert sorted(deleted) == sorted([single.client_id, first.client_id, second.client_id])
    assert not ClientApplication.objects.exists() and not Login.objects.exists()


# --- access policies -----------------------------------------------------------------------------


@pytest.mark.parametrize(("rules", "message"), [
    ('[{"resourceType": "Patient",', "Access policy is not valid JSON"),
    ('[{"resourceType": "Patient", "interaction": ["read", "write"]}]', "unknown interaction(s) write"),
])
def test_policy_add_rejects_bad_rules(admin_client, project, rules, message):
    response = admin_client.post(url("accesspolicy", "add"), {
        "project": str(project.pk), "name": "Bad", "description": "", "resources": rules})
    assert response.status_code == 200
    assert message in text(response)
    assert not AccessPolicy.objects.exists()


def test_policy_add_saves_normalised_rules(admin_client, project):
    response = admin_client.post(url("accesspolicy", "add"), {
        "project": str(project.pk), "name": "Patients", "description": "",
        "resources": json.dumps({"resource": [{"resourceType": "Observation", "readonly": True,
                                               "criteria": "Observation?subject=%patient"}]}),
    })
    assert response.status_code == 302
    policy = AccessPolicy.objects.get(name="Patients", project=project)
    assert policy.resources == [{"resourceType": "Observation", "criteria": "Observation?subject=%patient",
                                 "interaction": ["read", "vread", "history", "search"]}]
    body = text(admin_client.get(url("accesspolicy", "change", policy.pk)))
    assert "&quot;interaction&quot;: [\n" in body  # pretty-printed in the textarea


def test_policy_change_goes_through_update_and_rejects_bad_input(admin_client, policy):
    other = AccessPolicyFactory(project=policy.project, name="Taken")
    change = url("accesspolicy", "change", policy.pk)
    before = policy.resources

    response = admin_client.post(change, {"name": policy.name, "description": "",
                                          "resources": '[{"resourceType": "Patient", "interaction": "all"}]'})
    assert "interaction must be a non-empty list" in text(response)
    response = admin_client.post(change, {"name": other.name, "description": "", "resources": json.dumps(before)})
    assert response.status_code == 200
    assert "already exists" in text(response)
    policy.refresh_from_db()
    assert policy.resources == before and policy.name != other.name

    response = admin_client.post(change, {"name": "Renamed", "description": "d",
                                          "resources": '[{"resourceType": "*", "readonly": true}]'})
    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.name == "Renamed"
    assert policy.resources == [{"resourceType": "*", "interaction": ["read", "vread", "history", "search"]}]


def test_service_error_on_change_is_a_message_and_rolls_back(admin_client, policy, monkeypatch):
    from django.core.exceptions import ValidationError

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ValidationError("Changed by someone else.")

    monkeypatch.setattr(services, "update_access_policy", refuse)
    change = url("accesspolicy", "change", policy.pk)
    response = admin_client.post(change, {"name": "Renamed", "description": "",
                                          "resources": json.dumps(policy.resources)}, follow=True)
    assert response.redirect_chain == [(change, 302)]
    assert "Changed by someone else." in text(response)
    policy.refresh_from_db()
    assert policy.name != "Renamed"


# --- memberships ---------------------------------------------------------------------------------


def invite_data(project: Project, **overrides: Any) -> dict[str, Any]:
    return {"project": str(project.pk), "email": "Alice@Example.org", "first_name": "Alice", "last_name": "Smith",
            "profile_type": "Patient", "access_policy": "", "password": "", **overrides}


def test_membership_add_invites_new_user(admin_client, project, policy):
    response = admin_client.post(url("projectmembership", "add"), invite_data(project, access_policy=str(policy.pk)))

    assert response.status_code == 302, text(response)
    user = get_user_model().objects.get(email="alice@example.org")
    assert not user.has_usable_password()
    membership = ProjectMembership.objects.get(user=user, project=project)
    assert membership.profile.startswith("Patient/")
    assert membership.profile_display == "Alice Smith"
    assert membership.access_policy == policy


def test_membership_add_with_password(admin_client, project):
    response = admin_client.post(url("projectmembership", "add"), invite_data(
        project, profile_type="Practitioner", password="a long and unusual passphrase", admin="on"))
    assert response.status_code == 302
    membership = ProjectMembership.objects.get(project=project)
    assert membership.admin and membership.profile.startswith("Practitioner/")
    assert membership.user.check_password("a long and unusual passphrase")


def test_membership_add_rejects_duplicate(admin_client, project):
    admin_client.post(url("projectmembership", "add"), invite_data(project))
    response = admin_client.post(url("projectmembership", "add"), invite_data(project, first_name="Again"))

    assert response.status_code == 200
    assert "is already a Patient member of this project" in text(response)
    assert ProjectMembership.objects.filter(project=project).count() == 1


def test_membership_change_limits_policy_to_project(admin_client, patient_membership):
    foreign = AccessPolicyFactory(project=ProjectFactory())
    change = url("projectmembership", "change", patient_membership.pk)
    data = {"access_policy": str(foreign.pk), "active": "on", "access_parameters": "{}"}
    response = admin_client.post(change, data)
    assert response.status_code == 200
    assert "Select a valid choice" in text(response)

    own = AccessPolicyFactory(project=patient_membership.project)
    response = admin_client.post(change, {**data, "access_policy": str(own.pk), "admin": "on",
                                          "access_parameters": '{"organization": "Organization/1"}'})
    assert response.status_code == 302
    patient_membership.refresh_from_db()
    assert patient_membership.access_policy == own and patient_membership.admin
    assert patient_membership.access_parameters == {"organization": "Organization/1"}


def test_membership_deactivation_revokes_its_logins(admin_client, patient_membership, client_app):
    login = make_login(client_app, user=patient_membership.user, membership=patient_membership)
    other = make_login(client_app, user=patient_membership.user)
    response = admin_client.post(url("projectmembership", "change", patient_membership.pk),
                                 {"access_policy": "", "access_parameters": "{}"})
    assert response.status_code == 302, text(response)
    patient_membership.refresh_from_db()
    login.refresh_from_db()
    other.refresh_from_db()
    assert not patient_membership.active
    assert login.revoked_reason == "membership_deactivated"
    assert other.revoked_at is None


# --- projects ------------------------------------------------------------------------------------


def inline_data(rows: list[tuple[str, str]], initial: int = 0, ids: list[str] | None = None) -> dict[str, Any]:
    prefix = "default_policies"
    data = {f"{prefix}-TOTAL_FORMS": str(len(rows)), f"{prefix}-INITIAL_FORMS": str(initial),
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}
    for index, (profile_type, policy) in enumerate(rows):
        data[f"{prefix}-{index}-profile_type"] = profile_type
        data[f"{prefix}-{index}-access_policy"] = policy
        if ids and index < len(ids):
            data[f"{prefix}-{index}-id"] = ids[index]
    return data


def test_project_add_and_default_policies(admin_client):
    response = admin_client.post(url("project", "add"), {"name": "Clinic", "description": "", "owner": ""})
    assert response.status_code == 302
    project = Project.objects.get(name="Clinic")
    assert project.active

    own = AccessPolicyFactory(project=project)
    foreign = AccessPolicyFactory(project=ProjectFactory())
    change = url("project", "change", project.pk)
    base = {"name": "Clinic", "description": "", "owner": "", "active": "on"}
    response = admin_client.post(change, {**base, **inline_data([("Patient", str(foreign.pk))])})
    assert response.status_code == 200
    assert not DefaultAccessPolicy.objects.exists()

    response = admin_client.post(change, {**base, **inline_data([("Patient", str(own.pk))])})
    assert response.status_code == 302
    default = DefaultAccessPolicy.objects.get(project=project)
    assert (default.profile_type, default.access_policy) == ("Patient", own)

    response = admin_client.post(change, {
        **base, **inline_data([("Patient", str(own.pk))], initial=1, ids=[str(default.pk)]),
        "default_policies-0-DELETE": "on"})
    assert response.status_code == 302
    assert not DefaultAccessPolicy.objects.exists()


def test_project_change_goes_through_update_project(admin_client, client_app):
    project = client_app.project
    login = make_login(client_app)
    change = url("project", "change", project.pk)
    response = admin_client.post(change, {"name": "Renamed", "description": "d", "owner": "", **inline_data([])})
    assert response.status_code == 302, text(response)
    project.refresh_from_db()
    login.refresh_from_db()
    assert (project.name, project.description, project.active) == ("Renamed", "d", False)
    assert login.revoked_reason == "project_deactivated"


def test_project_change_service_error_is_a_message(admin_client, project, monkeypatch):
    from django.core.exceptions import ValidationError

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ValidationError("Changed by someone else.")

    monkeypatch.setattr(services, "update_project", refuse)
    change = url("project", "change", project.pk)
    response = admin_client.post(change, {"name": "Renamed", "description": "", "owner": "", "active": "on",
                                          **inline_data([])}, follow=True)
    assert response.redirect_chain == [(change, 302)]
    assert "Changed by someone else." in text(response)
    project.refresh_from_db()
    assert project.name != "Renamed"


# --- signing keys --------------------------------------------------------------------------------


def test_signing_key_pages_never_show_private_key(admin_client, signing_key):
    for page in (url("signingkey", "changelist"), url("signingkey", "change", signing_key.pk)):
        body = text(admin_client.get(page))
        assert signing_key.kid in body
        assert signing_key.private_key not in body
        assert signing_key.private_key[:40] not in body
        assert 'name="private_key"' not in body


def test_rotate_signing_keys_action(admin_client, signing_key):
    response = action(admin_client, "signingkey", "rotate_keys", signing_key)
    assert "New active signing key" in text(response)
    signing_key.refresh_from_db()
    assert signing_key.status == SigningKey.Status.INACTIVE
    active = SigningKey.objects.get(status=SigningKey.Status.ACTIVE)
    assert active.pk != signing_key.pk

    response = action(admin_client, "signingkey", "retire_keys", active)
    assert "The active signing key cannot be retired; rotate first." in text(response)
    active.refresh_from_db()
    assert active.status == SigningKey.Status.ACTIVE

    action(admin_client, "signingkey", "retire_keys", signing_key)
    signing_key.refresh_from_db()
    assert signing_key.status == SigningKey.Status.RETIRED and signing_key.retired_at is not None


def test_signing_key_actions_need_change_permission(client, signing_key):
    from django.contrib.auth.models import Permission

    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_signingkey"))
    client.force_login(viewer)
    response = client.get(url("signingkey", "changelist"))
    assert response.status_code == 200
    assert "rotate_keys" not in text(response)
    action(client, "signingkey", "rotate_keys", signing_key)
    assert SigningKey.objects.get(status=SigningKey.Status.ACTIVE).pk == signing_key.pk


def test_login_pages_never_show_digests(admin_client, client_app):
    from django.utils import timezone

    from medplum_auth.models import Login

    login = Login.objects.create(client=client_app, project=client_app.project, auth_time=timezone.now(),
                                 code_digest="c0de" * 16, refresh_digest="f00d" * 16,
                                 previous_refresh_digest="beef" * 16)
    for page in (url("login", "changelist"), url("login", "change", login.pk)):
        response = admin_client.get(page)
        assert response.status_code == 200
        body = text(response)
        assert str(login.pk) in body
        assert "c0de" * 16 not in body and "f00d" * 16 not in body and "beef" * 16 not in body


# --- the forms outside the admin (Project Admin pages) -------------------------------------------


def test_forms_with_fixed_project(project):
    foreign = AccessPolicyFactory(project=ProjectFactory())
    own = AccessPolicyFactory(project=project, name="Own")

    form = AccessPolicyForm({"name": "Own", "description": "", "resources": "[]"}, project=project)
    assert not form.is_valid()
    assert "already exists" in str(form.errors)
    form = AccessPolicyForm({"name": "Empty", "description": "", "resources": "[]"}, project=project)
    assert form.errors == {"resources": ["This field is required."]}
    form = AccessPolicyForm({"name": "New", "description": "", "resources": '[{"resourceType": "Patient"}]'},
                            project=project)
    assert form.is_valid(), form.errors
    policy = form.save()
    assert policy.project == project and policy.resources[0]["interaction"][0] == "create"

    form = ClientCreateForm({"name": "App", "redirect_uris": "https://a.example.org/cb", "client_type": "confidential",
                             "access_policy": str(foreign.pk)}, project=project)
    assert not form.is_valid()
    assert "access_policy" in form.errors
    assert own in form.fields["access_policy"].queryset and foreign not in form.fields["access_policy"].queryset
    form = ClientCreateForm({"name": "App", "redirect_uris": "https://a.example.org/cb",
                             "client_type": "confidential"}, project=project)
    assert form.is_valid(), form.errors
    client = form.save()
    assert client.project == project and client.verify_secret(form.secret)


def test_invite_form_reports_service_errors_on_fields(project):
    existing = MembershipFactory(project=project, profile_type="Patient")
    form = MembershipInviteForm({"email": existing.user.email, "first_name": "A", "last_name": "B",
                                 "profile_type": "Patient", "password": "another password 123"}, project=project)
    assert form.is_valid(), form.errors
    from django.core.exceptions import ValidationError

    from medplum_auth.forms import add_service_error

    with pytest.raises(ValidationError) as exc:
        form.save()
    add_service_error(form, exc.value)
    assert "does not change their password" in str(form.errors["password"])


def test_revoke_logins_action(admin_client, client_app):
    from django.utils import timezone

    from medplum_auth.models import Login

    live = Login.objects.create(client=client_app, project=client_app.project, auth_time=timezone.now())
    other = Login.objects.create(client=client_app, project=client_app.project, auth_time=timezone.now())
    response = admin_client.post(url("login", "changelist"), {"action": "revoke_selected",
                                                               "_selected_action": [str(live.pk)]}, follow=True)
    assert response.status_code == 200
    assert "1 login revoked." in text(response)
    live.refresh_from_db(), other.refresh_from_db()
    assert (live.revoked_reason, other.revoked_at) == ("admin_revoked", None)
    assert live.revoked_at is not None


def test_view_only_staff_cannot_revoke_logins(client, client_app):
    from django.contrib.auth.models import Permission
    from django.utils import timezone

    from medplum_auth.models import Login

    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_login"))
    client.force_login(staff)
    login = Login.objects.create(client=client_app, project=client_app.project, auth_time=timezone.now())
    page = client.get(url("login", "changelist"))
    assert page.status_code == 200 and "revoke_selected" not in text(page)
    client.post(url("login", "changelist"), {"action": "revoke_selected", "_selected_action": [str(login.pk)]})
    login.refresh_from_db()
    assert login.revoked_at is None
