"""The update, status, delete and revocation services: validated writes and immediate revocation."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from medplum_auth import bearer, revocation, services, tokens
from medplum_auth.forms import ClientApplicationForm, MembershipForm, ProjectForm
from medplum_auth.models import ClientApplication, Consent, Login, Project, ProjectMembership
from medplum_auth.services import revoke_login
from tests.factories import (
    AccessPolicyFactory,
    ClientApplicationFactory,
    MembershipFactory,
    ProjectFactory,
    UserFactory,
    client_secret_digest,
)

pytestmark = pytest.mark.django_db


def make_login(client_app: ClientApplication, membership: ProjectMembership | None = None, **kwargs: Any) -> Login:
    if membership is not None:
        kwargs.setdefault("user", membership.user)
    return Login.objects.create(client=client_app, project=client_app.project, membership=membership,
                                auth_time=timezone.now(), **kwargs)


def revoked(login: Login) -> tuple[bool, str]:
    login.refresh_from_db()
    return login.revoked_at is not None, login.revoked_reason


def audit_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "medplum_auth.audit")


def db_row(obj: Any) -> dict[str, Any]:
    row = type(obj)._default_manager.get(pk=obj.pk)
    return {field.attname: getattr(row, field.attname) for field in row._meta.concrete_fields}


@pytest.fixture
def audit(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="medplum_auth.audit")
    return caplog


# --- revoke_logins ----------------------------------------------------------------------------


@pytest.fixture
def login_grid(project):
    """Two clients × two members of one project, plus a login in another project."""
    clients = [ClientApplicationFactory(project=project) for _ in range(2)]
    members = [MembershipFactory(project=project) for _ in range(2)]
    grid = {(c, m): make_login(clients[c], members[m]) for c in range(2) for m in range(2)}
    outside = make_login(ClientApplicationFactory(), user=members[0].user)
    return clients, members, grid, outside


@pytest.mark.parametrize(("filters", "expected"), [
    (lambda c, m, p: {"client": c[0]}, {(0, 0), (0, 1)}),
    (lambda c, m, p: {"membership": m[1]}, {(0, 1), (1, 1)}),
    (lambda c, m, p: {"user": m[0].user}, {(0, 0), (1, 0), "outside"}),
    (lambda c, m, p: {"project": p}, {(0, 0), (0, 1), (1, 0), (1, 1)}),
    (lambda c, m, p: {"client": c[1], "user": m[0].user}, {(1, 0)}),
])
def test_revoke_logins_matches_every_filter_given(project, login_grid, filters, expected):
    clients, members, grid, outside = login_grid
    count = services.revoke_logins(**filters(clients, members, project), reason="admin_revoked")
    assert count == len(expected)
    every = {**grid, "outside": outside}
    assert {key for key, login in every.items() if revoked(login)[0]} == expected
    assert all(revoked(every[key]) == (True, "admin_revoked") for key in expected)


def test_revoke_logins_needs_a_filter_and_a_reason(client_app):
    login = make_login(client_app)
    with pytest.raises(TypeError):
        services.revoke_logins(reason="oops")
    for reason in ("", "x" * 65):
        with pytest.raises(ValueError, match="revocation reason"):
            services.revoke_logins(client=client_app, reason=reason)
    assert revoked(login) == (False, "")


def test_revoke_logins_is_idempotent_and_keeps_the_first_reason(client_app, audit):
    login = make_login(client_app)
    assert services.revoke_logins(client=client_app, reason="first") == 1
    login.refresh_from_db()
    first_at = login.revoked_at
    assert services.revoke_logins(client=client_app, reason="second") == 0
    login.refresh_from_db()
    assert (login.revoked_at, login.revoked_reason) == (first_at, "first")
    text = audit_text(audit)
    assert f"logins revoked count=1 reason=first client={client_app.client_id}" in text
    assert f"logins revoked count=0 reason=second client={client_app.client_id}" in text


def test_revoked_logins_tokens_stop_working(client_app):
    services.ensure_signing_key()
    login = make_login(client_app)
    token = tokens.issue_access_token(subject=client_app.client_id, client_id=client_app.client_id,
                                      login_id=str(login.pk), scope="system/*.read", profile=None, lifetime=300)
    assert bearer.authenticate(token).login.pk == login.pk
    services.revoke_logins(client=client_app, reason="admin_revoked")
    with pytest.raises(bearer.BearerError) as exc:
        bearer.authenticate(token)
    assert exc.value.error == "invalid_token"


def test_revoke_login_and_revoke_logins_share_one_update(client_app, monkeypatch):
    calls: list[tuple[list[Any], str]] = []
    real = revocation.revoke

    def spy(queryset, reason):
        calls.append((sorted(queryset.values_list("pk", flat=True)), reason))
        return real(queryset, reason)

    monkeypatch.setattr(revocation, "revoke", spy)
    one, two = make_login(client_app), make_login(client_app)
    revoke_login(one, reason="logout")
    services.revoke_logins(client=client_app, reason="client_disabled")
    assert calls == [([one.pk], "logout"), (sorted([one.pk, two.pk]), "client_disabled")]
    assert revoked(one) == (True, "logout") and revoked(two) == (True, "client_disabled")


def test_revoke_login_fast_path_is_unchanged(client_app, django_assert_num_queries, audit):
    login = make_login(client_app)
    with django_assert_num_queries(2):  # the UPDATE and the security event's INSERT
        revoke_login(login, reason="logout")
    assert login.revoked_reason == "logout" and login.revoked_at is not None
    stored_at = Login.objects.get(pk=login.pk).revoked_at
    assert login.revoked_at == stored_at
    with django_assert_num_queries(0):  # already revoked in memory: nothing to do
        revoke_login(login, reason="again")
    assert revoked(login) == (True, "logout")
    assert audit_text(audit).count(f"login revoked login={login.pk} reason=") == 1


# --- update_project ---------------------------------------------------------------------------


def test_update_project(project, audit):
    owner = UserFactory()
    before = Project.objects.get(pk=project.pk).updated
    result = services.update_project(project, name="  Clinic  ", description="Main", owner=owner)
    assert result is project
    row = Project.objects.get(pk=project.pk)
    assert (row.name, row.description, row.owner, row.active) == ("Clinic", "Main", owner, True)
    assert row.updated > before
    assert f"project updated id={project.id} fields=name,description,owner" in audit_text(audit)


def test_update_project_rejects_bad_input_and_reloads(project):
    ProjectFactory(name="Taken")
    before = db_row(project)
    with pytest.raises(ValidationError) as exc:
        services.update_project(project, name="Taken", description="changed too")
    assert exc.value.message_dict == {"name": ["Project with this Name already exists."]}
    assert db_row(project) == before
    assert (project.name, project.description) == (before["name"], before["description"])

    for field in ("id", "created", "clients"):
        with pytest.raises(ValidationError) as exc:
            services.update_project(project, **{field: None}, description="changed")
        assert exc.value.message_dict == {field: ["This field cannot be changed here."]}
    assert db_row(project) == before and project.description == before["description"]


def test_deactivating_a_project_revokes_its_logins(project, login_grid, audit):
    _clients, _members, grid, outside = login_grid
    services.update_project(project, active=False)
    assert all(revoked(login) == (True, "project_deactivated") for login in grid.values())
    assert revoked(outside) == (False, "")
    assert f"logins revoked count=4 reason=project_deactivated project={project.id}" in audit_text(audit)
    services.update_project(project, active=True)
    assert all(revoked(login)[0] for login in grid.values())


# --- update_client ----------------------------------------------------------------------------


def test_update_client_changes_editable_fields(client_app, project, audit):
    policy = AccessPolicyFactory(project=project)
    digest = client_app.client_secret
    result = services.update_client(
        client_app, name=" Renamed ", redirect_uris=["https://a.example.org/cb", " http://localhost:3000/cb "],
        allowed_origins="https://a.example.org", access_policy=policy, access_token_lifetime=600,
        sign_in_text="Sign in with your clinic account", jwks={"keys": []})
    assert result is client_app
    row = ClientApplication.objects.get(pk=client_app.pk)
    assert row.name == "Renamed"
    assert row.redirect_uri_list == ["https://a.example.org/cb", "http://localhost:3000/cb"]
    assert (row.access_policy, row.access_token_lifetime, row.jwks) == (policy, 600, {"keys": []})
    assert row.client_secret == digest
    text = audit_text(audit)
    assert (f"client updated client_id={client_app.client_id} fields=name,redirect_uris,allowed_origins,"
            "access_policy,access_token_lifetime,sign_in_text,jwks") in text
    assert "clinic account" not in text and "a.example.org" not in text


def test_update_client_without_changes_writes_nothing(client_app, audit):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        services.update_client(client_app, name=client_app.name, status=client_app.status)
    assert not [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("UPDATE")]
    assert "client updated" not in audit_text(audit)


@pytest.mark.parametrize(("field", "value"), [
    ("client_secret", "x"), ("retiring_secret", "x"), ("hash_client_secret", True), ("client_id", "mine"),
    ("client_type", ClientApplication.CLIENT_PUBLIC), ("secret_rotated_at", None), ("user", None),
    ("created", None), ("not_a_field", 1),
])
def test_update_client_refuses_fields_it_does_not_own(client_app, field, value):
    before = db_row(client_app)
    with pytest.raises(ValidationError) as exc:
        services.update_client(client_app, name="Renamed", **{field: value})
    assert exc.value.message_dict == {field: ["This field cannot be changed here."]}
    assert db_row(client_app) == before
    assert client_app.name == before["name"]


def test_update_client_refuses_the_project(client_app):
    with pytest.raises(ValidationError):
        services.update_client(client_app, project=ProjectFactory())
    assert ClientApplication.objects.get(pk=client_app.pk).project_id == client_app.project_id


@pytest.mark.parametrize(("fields", "error_field"), [
    ({"redirect_uris": "http://evil.example/cb"}, "redirect_uris"),
    ({"redirect_uris": "https://a.example.org/cb#frag"}, "redirect_uris"),
    ({"allowed_origins": "https://a.example.org/path"}, "allowed_origins"),
    ({"jwks": ["not", "a", "set"]}, "jwks"),
    ({"status": "paused"}, "status"),
    ({"name": "   "}, "name"),
    ({"name": None}, "name"),
    ({"access_policy": "not a policy"}, "access_policy"),
])
def test_update_client_rejects_bad_input_and_reloads(client_app, fields, error_field):
    before = db_row(client_app)
    with pytest.raises(ValidationError) as exc:
        services.update_client(client_app, description="changed too", **fields)
    assert error_field in exc.value.message_dict
    assert db_row(client_app) == before
    assert client_app.description == before["description"]
    for name in fields:
        field = ClientApplication._meta.get_field(name)
        assert getattr(client_app, field.attname) == before[field.attname]


def test_update_client_rejects_another_projects_policy(client_app):
    foreign = AccessPolicyFactory(project=ProjectFactory())
    with pytest.raises(ValidationError) as exc:
        services.update_client(client_app, access_policy=foreign)
    assert exc.value.message_dict == {"access_policy": ["The access policy belongs to another project."]}
    assert client_app.access_policy is None
    assert ClientApplication.objects.get(pk=client_app.pk).access_policy is None


def test_update_client_keeps_a_secret_rotated_meanwhile(client_app):
    stale = ClientApplication.objects.get(pk=client_app.pk)
    new = services.rotate_client_secret(client_app)
    services.update_client(stale, name="Renamed")
    row = ClientApplication.objects.get(pk=client_app.pk)
    assert row.name == "Renamed"
    assert row.verify_secret(new) and row.verify_secret(client_app.plaintext_secret)


def test_update_client_of_a_deleted_client(client_app):
    ClientApplication.objects.filter(pk=client_app.pk).delete()
    with pytest.raises(ValidationError) as exc:
        services.update_client(client_app, name="Renamed")
    assert exc.value.code == "gone"


def test_update_client_status_off_revokes_logins(client_app):
    login = make_login(client_app)
    services.update_client(client_app, description="no status change")
    assert revoked(login) == (False, "")
    services.update_client(client_app, status=ClientApplication.Status.OFF)
    assert revoked(login) == (True, "client_disabled")


def test_client_forms_edit_only_fields_the_service_owns():
    assert set(ClientApplicationForm.base_fields) <= services.CLIENT_UPDATE_FIELDS
    assert set(ProjectForm.base_fields) <= services.PROJECT_UPDATE_FIELDS
    assert set(MembershipForm.base_fields) == {"access_policy", "access_parameters", "admin", "active"}


# --- set_client_status ------------------------------------------------------------------------


def test_disabling_a_client_revokes_only_its_active_logins(project, audit):
    client_app, other = ClientApplicationFactory(project=project), ClientApplicationFactory(project=project)
    active, earlier, elsewhere = make_login(client_app), make_login(client_app), make_login(other)
    revoke_login(earlier, reason="logout")
    earlier_at = earlier.revoked_at

    assert services.set_client_status(client_app, ClientApplication.Status.OFF) is client_app
    assert ClientApplication.objects.get(pk=client_app.pk).status == ClientApplication.Status.OFF
    assert revoked(active) == (True, "client_disabled")
    assert revoked(earlier) == (True, "logout") and earlier.revoked_at == earlier_at
    assert revoked(elsewhere) == (False, "")
    text = audit_text(audit)
    assert f"client status changed client_id={client_app.client_id} status=off" in text
    assert f"logins revoked count=1 reason=client_disabled client={client_app.client_id}" in text

    services.set_client_status(client_app, ClientApplication.Status.ACTIVE)
    assert ClientApplication.objects.get(pk=client_app.pk).status == ClientApplication.Status.ACTIVE
    assert revoked(active) == (True, "client_disabled")


def test_disabling_twice_changes_status_once(client_app, audit):
    services.set_client_status(client_app, ClientApplication.Status.OFF)
    services.set_client_status(client_app, ClientApplication.Status.OFF)
    assert audit_text(audit).count("client status changed") == 1


def test_set_client_status_rejects_unknown_status(client_app):
    login = make_login(client_app)
    with pytest.raises(ValidationError) as exc:
        services.set_client_status(client_app, "paused")
    assert "status" in exc.value.message_dict
    assert client_app.status == ClientApplication.Status.ACTIVE
    assert ClientApplication.objects.get(pk=client_app.pk).status == ClientApplication.Status.ACTIVE
    assert revoked(login) == (False, "")


def test_a_client_that_no_longer_validates_can_still_be_disabled(client_app):
    ClientApplication.objects.filter(pk=client_app.pk).update(redirect_uris="http://legacy.example/cb")
    legacy = ClientApplication.objects.get(pk=client_app.pk)
    with pytest.raises(ValidationError):
        services.update_client(legacy, status=ClientApplication.Status.OFF)
    services.set_client_status(legacy, ClientApplication.Status.OFF)
    row = ClientApplication.objects.get(pk=client_app.pk)
    assert row.status == ClientApplication.Status.OFF
    assert row.redirect_uris == "http://legacy.example/cb"


# --- delete_client ----------------------------------------------------------------------------


def test_delete_client_revokes_then_deletes(project, patient_membership, audit, monkeypatch):
    client_app, other = ClientApplicationFactory(project=project), ClientApplicationFactory(project=project)
    make_login(client_app, patient_membership)
    kept = make_login(other, patient_membership)
    Consent.objects.create(user=patient_membership.user, client=client_app, scope="openid")
    states: list[tuple[int, int]] = []
    real = revocation.revoke

    def spy(queryset, reason):
        result = real(queryset, reason)
        states.append((Login.objects.filter(client=client_app, revoked_at__isnull=False).count(),
                       ClientApplication.objects.filter(pk=client_app.pk).count()))
        return result

    monkeypatch.setattr(revocation, "revoke", spy)
    client_id = client_app.client_id
    services.delete_client(client_app)

    assert states == [(1, 1)]  # revoked while the client still existed
    assert not ClientApplication.objects.filter(client_id=client_id).exists()
    assert not Login.objects.filter(client_id=client_app.pk).exists()
    assert not Consent.objects.filter(client_id=client_app.pk).exists()
    assert revoked(kept) == (False, "")
    assert Project.objects.filter(pk=project.pk).exists()
    text = audit_text(audit)
    assert text.index(f"logins revoked count=1 reason=client_deleted client={client_id}") < text.index(
        f"client deleted client_id={client_id} project={project.id}")


# --- update_membership ------------------------------------------------------------------------


def test_update_membership_changes_only_what_is_given(patient_membership, audit):
    policy = AccessPolicyFactory(project=patient_membership.project)
    services.update_membership(patient_membership, access_policy=policy, admin=True)
    row = ProjectMembership.objects.get(pk=patient_membership.pk)
    assert (row.access_policy, row.admin, row.active, row.access_parameters) == (policy, True, True, {})

    services.update_membership(patient_membership, access_parameters={"organization": "Organization/1"})
    row = ProjectMembership.objects.get(pk=patient_membership.pk)
    assert (row.access_policy, row.admin, row.access_parameters) == (policy, True, {"organization": "Organization/1"})

    services.update_membership(patient_membership, access_policy=None)
    assert ProjectMembership.objects.get(pk=patient_membership.pk).access_policy is None
    text = audit_text(audit)
    assert f"membership updated id={patient_membership.id} fields=access_policy,admin" in text
    assert "Organization/1" not in text


@pytest.mark.parametrize(("kwargs", "error_field"), [
    ({"access_parameters": {"organization": 1}}, "access_parameters"),
    ({"access_parameters": ["not", "a", "dict"]}, "access_parameters"),
    ({"access_policy": "not a policy"}, "access_policy"),
])
def test_update_membership_rejects_bad_input_and_reloads(patient_membership, kwargs, error_field):
    before = db_row(patient_membership)
    with pytest.raises(ValidationError) as exc:
        services.update_membership(patient_membership, admin=True, **kwargs)
    assert error_field in exc.value.message_dict
    assert db_row(patient_membership) == before
    assert patient_membership.admin is False and patient_membership.access_parameters == {}


def test_update_membership_rejects_another_projects_policy(patient_membership):
    login = make_login(ClientApplicationFactory(project=patient_membership.project), patient_membership)
    foreign = AccessPolicyFactory(project=ProjectFactory())
    with pytest.raises(ValidationError) as exc:
        services.update_membership(patient_membership, access_policy=foreign, active=False)
    assert exc.value.message_dict == {"access_policy": ["The access policy belongs to another project."]}
    assert patient_membership.active and patient_membership.access_policy is None
    assert ProjectMembership.objects.get(pk=patient_membership.pk).active
    assert revoked(login) == (False, "")


def test_deactivating_a_membership_revokes_its_logins(project, patient_membership, audit):
    client_app = ClientApplicationFactory(project=project)
    other_membership = MembershipFactory(project=project, user=patient_membership.user, profile_type="Practitioner")
    login, sibling = make_login(client_app, patient_membership), make_login(client_app, other_membership)

    services.update_membership(patient_membership, active=False)
    assert revoked(login) == (True, "membership_deactivated")
    assert revoked(sibling) == (False, "")
    assert (f"logins revoked count=1 reason=membership_deactivated membership={patient_membership.id}"
            in audit_text(audit))

    services.update_membership(patient_membership, active=False, admin=False)  # no change: no revocation
    assert audit_text(audit).count("reason=membership_deactivated") == 1
    services.update_membership(patient_membership, active=True)
    assert revoked(login) == (True, "membership_deactivated")


# --- audit log --------------------------------------------------------------------------------


def test_update_audit_log_never_contains_secrets(project, audit):
    client_app, secret = services.create_client(project, "Portal")
    make_login(client_app)
    services.update_client(client_app, name="Portal 2", jwks={"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})
    services.set_client_status(client_app, ClientApplication.Status.OFF)
    services.delete_client(client_app)
    text = audit_text(audit)
    assert "client updated" in text and "client deleted" in text
    for value in (secret, client_secret_digest(secret), "c2VjcmV0"):
        assert value not in text
