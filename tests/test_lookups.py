"""``medplum_auth.lookups``: each hot-path statement must give what the ORM gives (SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC

import pytest
from django.db import connection, transaction
from django.db.models.signals import post_init
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from medplum_auth import lookups
from medplum_auth.models import ClientApplication, Login, ProjectMembership

from .factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory

pytestmark = pytest.mark.django_db


def make_login(**kwargs) -> Login:
    client = ClientApplicationFactory(access_policy=AccessPolicyFactory())
    membership = MembershipFactory(project=client.project, access_policy=AccessPolicyFactory(project=client.project),
                                   access_parameters={"org": "Organization/1"})
    return Login.objects.create(user=membership.user, client=client, project=client.project,
                                membership=membership, auth_time=membership.created, **kwargs)


def test_bearer_login_is_the_orms_row_in_one_query():
    login = make_login(launch_patient="Patient/9", scope="openid patient/*.rs")
    make_login()  # another row the lookup must not return
    with CaptureQueriesContext(connection) as queries:
        found = lookups.bearer_login(str(login.pk))
    assert len(queries) == 1
    orm = Login.objects.select_related("user", "project", "client__access_policy",
                                       "membership__access_policy").get(pk=login.pk)
    assert (found.pk, found.user_id, found.client_id, found.project_id, found.membership_id) == \
        (orm.pk, orm.user_id, orm.client_id, orm.project_id, orm.membership_id)
    assert (found.scope, found.auth_method, found.auth_time, found.revoked_at, found.launch_patient,
            found.resource_scopes_withheld) == (orm.scope, orm.auth_method, orm.auth_time, None, "Patient/9", False)
    assert found.auth_time.tzinfo is not None and found.auth_time.utcoffset() == UTC.utcoffset(None)
    user = found.user
    assert (user.pk, user.email, user.first_name, user.last_name, user.is_active, user.is_superuser) == \
        (orm.user.pk, orm.user.email, orm.user.first_name, orm.user.last_name, True, False)
    assert (user.get_username(), user.get_full_name()) == (orm.user.get_username(), orm.user.get_full_name())
    assert (found.project.pk, found.project.name, found.project.active) == (orm.project.pk, orm.project.name, True)
    client = found.client
    assert (client.pk, client.client_id, client.name, client.status, client.project_id, client.reference) == \
        (orm.client.pk, orm.client.client_id, orm.client.name, orm.client.status, orm.client.project_id,
         orm.client.reference)
    assert client.access_policy.resources == orm.client.access_policy.resources
    assert isinstance(client.access_policy.id, uuid.UUID) and client.access_policy.id == orm.client.access_policy_id
    membership = found.membership
    assert (membership.pk, membership.profile, membership.profile_type, membership.admin, membership.active) == \
        (orm.membership.pk, orm.membership.profile, orm.membership.profile_type, False, True)
    assert membership.access_parameters == {"org": "Organization/1"}  # JSON decoded, not a string
    assert membership.policy_parameters() == orm.membership.policy_parameters()
    assert membership.access_policy.resources == orm.membership.access_policy.resources
    assert (found.profile, found.patient_context) == (orm.profile, orm.patient_context)


def test_bearer_login_is_frozen():
    found = lookups.bearer_login(make_login().pk)
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.revoked_at = None
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.membership.active = False


def test_a_clients_own_login_has_no_user_or_membership():
    client = ClientApplicationFactory()
    login = Login.objects.create(client=client, project=client.project, auth_time=client.created,
                                 auth_method=Login.Method.CLIENT)
    found = lookups.bearer_login(login.pk)
    assert (found.user, found.user_id, found.membership, found.membership_id) == (None, None, None, None)
    assert found.client.access_policy is None
    assert found.profile == client.reference == f"ClientApplication/{client.client_id}"
    assert found.user_model is None


def test_load_gives_the_model_and_user_model_the_user():
    login = make_login()
    found = lookups.bearer_login(login.pk)
    model = found.load()
    assert isinstance(model, Login) and model.pk == login.pk and model.membership == login.membership
    assert found.user_model == login.user


def test_bearer_lookup_sees_changes_at_once():
    login = make_login()
    assert lookups.bearer_login(login.pk).revoked_at is None
    Login.objects.filter(pk=login.pk).update(revoked_at=login.auth_time)
    ProjectMembership.objects.filter(pk=login.membership_id).update(active=False)
    found = lookups.bearer_login(login.pk)
    assert found.revoked_at == login.auth_time
    assert found.membership.active is False


@pytest.mark.parametrize("value", [uuid.uuid4(), str(uuid.uuid4()), "not-a-uuid", "", None, 42, "' OR 1=1 --",
                                   "\x00"])
def test_missing_or_malformed_keys_find_nothing(value):
    make_login()
    assert lookups.bearer_login(value) is None


def test_text_keys_with_nul_find_nothing():
    client = ClientApplicationFactory()
    assert lookups.client_by_client_id.get(client.client_id).pk == client.pk
    assert lookups.client_by_client_id.get(client.client_id + "\x00") is None
    assert lookups.client_by_client_id.get("no such client") is None


def _values(obj) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields}


def test_model_lookups_build_what_the_orm_builds():
    """Model instances through ``Model.from_db``: every field as the ORM loads it, the related rows
    attached (no query to reach them), saved like any instance."""
    login = make_login(scope="openid", code_digest="c" * 64, remote_addr="127.0.0.1")
    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            found = lookups.login_by_code_for_update.get("c" * 64)
            related = (found.user, found.project, found.membership)
        assert len(queries) == 1
        if connection.features.has_select_for_update_of:
            assert "FOR UPDATE OF" in queries[0]["sql"]
    orm = Login.objects.select_related("user", "project", "membership").get(pk=login.pk)
    for ours, theirs in zip((found, *related), (orm, orm.user, orm.project, orm.membership), strict=True):
        assert type(ours) is type(theirs)
        assert _values(ours) == _values(theirs)
        assert (ours._state.adding, ours._state.db) == (False, "default")
        assert ours.get_deferred_fields() == set()
    found.scope = "openid profile"
    found.save(update_fields=["scope"])
    assert Login.objects.get(pk=login.pk).scope == "openid profile"
    assert list(found.membership.logins.all()) == [orm]  # real model instances: reverse managers work

    client = lookups.client_by_client_id.get(login.client.client_id)
    assert isinstance(client, ClientApplication) and _values(client) == _values(login.client)
    with CaptureQueriesContext(connection) as queries:
        assert client.project == login.project and client.is_active
    assert len(queries) == 0


def test_model_lookups_go_through_init_observers():
    """Built by ``Model.from_db`` (``__init__``): ``post_init`` receivers see every instance."""
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(type(instance).__name__)
    login = make_login(refresh_digest="r" * 64)
    post_init.connect(receiver, sender=ProjectMembership)
    try:
        with transaction.atomic():
            found = lookups.login_by_refresh_for_update.get("r" * 64)
        assert seen == ["ProjectMembership"] and found.membership.pk == login.membership_id
    finally:
        post_init.disconnect(receiver, sender=ProjectMembership)


@pytest.mark.django_db(transaction=True)  # outside the test's own transaction, as in autocommit
def test_a_locking_lookup_needs_a_transaction():
    login = make_login()
    Login.objects.filter(pk=login.pk).update(code_digest="d" * 64)
    with pytest.raises(TransactionManagementError):
        lookups.login_by_code_for_update.get("d" * 64)
    with transaction.atomic():
        assert lookups.login_by_code_for_update.get("d" * 64).pk == login.pk


@pytest.mark.django_db(transaction=True)
def test_the_statement_runs_on_every_threads_connection():
    """Threaded servers (runserver, gthread) give each thread its own connection: the statement
    written on one thread is run on the others' (Django forbids sharing a connection across threads)."""
    import threading

    from django.db import connections

    login = make_login(nonce="threads")
    assert lookups.bearer_login(login.pk).pk == login.pk  # written on this thread's connection
    found, errors = [], []

    def worker():
        try:
            row = lookups.bearer_login(str(login.pk))
            found.append((row.pk, row.membership.access_parameters, row.user.email))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert found == [(login.pk, {"org": "Organization/1"}, login.user.email)] * 4
