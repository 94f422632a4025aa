"""``medplum_auth.queries.CompiledLookup``: the SQL compiled once must give what the ORM gives."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from medplum_auth.bearer import bearer_logins
from medplum_auth.models import Login, ProjectMembership
from medplum_auth.queries import CompiledLookup

from .factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory

pytestmark = pytest.mark.django_db


def make_login(**kwargs) -> Login:
    client = ClientApplicationFactory(access_policy=AccessPolicyFactory())
    membership = MembershipFactory(project=client.project, access_policy=AccessPolicyFactory(project=client.project),
                                   access_parameters={"org": "Organization/1"})
    return Login.objects.create(user=membership.user, client=client, project=client.project,
                                membership=membership, auth_time=membership.created, **kwargs)


def test_bearer_lookup_matches_the_orm_in_one_query():
    login = make_login(launch_patient="Patient/9", scope="openid patient/*.rs")
    make_login()  # another row the lookup must not return
    lookup = CompiledLookup(Login, bearer_logins)
    lookup.get(login.pk)  # compiles
    with CaptureQueriesContext(connection) as queries:
        found = lookup.get(str(login.pk))
        values = (found.pk, found.user.email, found.user.is_active, found.project.active, found.client.client_id,
                  found.client.access_policy.resources, found.membership.profile,
                  found.membership.access_policy.resources, found.membership.access_parameters, found.launch_patient)
    assert len(queries) == 1
    orm = Login.objects.select_related("user", "project", "client__access_policy",
                                       "membership__access_policy").get(pk=login.pk)
    assert values == (orm.pk, orm.user.email, orm.user.is_active, orm.project.active, orm.client.client_id,
                      orm.client.access_policy.resources, orm.membership.profile,
                      orm.membership.access_policy.resources, {"org": "Organization/1"}, "Patient/9")
    assert found.membership.access_parameters == {"org": "Organization/1"}  # JSON decoded, not a string
    assert found.redirect_uri == orm.redirect_uri  # a column left out loads lazily, still right


def test_lookup_sees_changes_at_once():
    login = make_login()
    lookup = CompiledLookup(Login, bearer_logins)
    assert lookup.get(login.pk).revoked_at is None
    Login.objects.filter(pk=login.pk).update(revoked_at=login.auth_time)
    ProjectMembership.objects.filter(pk=login.membership_id).update(active=False)
    found = lookup.get(login.pk)
    assert found.revoked_at == login.auth_time
    assert found.membership.active is False


@pytest.mark.parametrize("value", [uuid.uuid4(), str(uuid.uuid4()), "not-a-uuid", "", None, 42, "' OR 1=1 --"])
def test_missing_or_malformed_keys_find_nothing(value):
    make_login()
    assert CompiledLookup(Login, bearer_logins).get(value) is None


def test_several_keys_are_bound_in_order():
    first, second = make_login(nonce="a"), make_login(nonce="b")
    lookup = CompiledLookup(Login, Login.objects.all, keys=("project", "nonce"))
    assert lookup.get(first.project_id, "a").pk == first.pk
    assert lookup.get(second.project_id, "b").pk == second.pk
    assert lookup.get(first.project_id, "b") is None


def test_the_base_querysets_filters_stay():
    mine, other = make_login(nonce="same"), make_login(nonce="same")
    lookup = CompiledLookup(Login, lambda: Login.objects.filter(project=mine.project_id), keys=("nonce",))
    assert lookup.get("same").pk == mine.pk
    assert other.nonce == "same"


def test_only_uuid_and_text_keys():
    login = make_login()
    with pytest.raises(TypeError, match="UUID or text"):
        CompiledLookup(Login, Login.objects.all, keys=("auth_time",)).get(login.auth_time)


@pytest.mark.django_db(transaction=True)  # outside the test's own transaction, as in autocommit
def test_a_locking_lookup_needs_a_transaction():
    from django.db import transaction
    from django.db.transaction import TransactionManagementError

    from medplum_auth import lookups

    login = make_login()
    Login.objects.filter(pk=login.pk).update(code_digest="d" * 64)
    with pytest.raises(TransactionManagementError):
        lookups.login_by_code_for_update.get("d" * 64)
    with transaction.atomic():
        assert lookups.login_by_code_for_update.get("d" * 64).pk == login.pk


def test_text_keys_with_nul_find_nothing():
    from medplum_auth import lookups

    client = ClientApplicationFactory()
    assert lookups.client_by_client_id.get(client.client_id).pk == client.pk
    assert lookups.client_by_client_id.get(client.client_id + "\x00") is None


@pytest.mark.django_db(transaction=True)
def test_compiled_once_runs_on_every_threads_connection():
    """Threaded servers (runserver, gthread) give each thread its own connection: the SQL compiled
    on one thread's is run on the others' (Django forbids sharing a connection across threads)."""
    import threading

    from django.db import connections

    login = make_login(nonce="threads")
    lookup = CompiledLookup(Login, bearer_logins)
    assert lookup.get(login.pk).nonce == "threads"  # compiled on this thread's connection
    found, errors = [], []

    def worker():
        try:
            row = lookup.get(str(login.pk))
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


def _loaded(obj) -> dict:
    return {k: v for k, v in vars(obj).items() if k != "_state"}


def test_objects_are_built_as_django_builds_them():
    """Without ``__init__`` (as unpickling does): the same loaded values, the same state, deferred
    fields absent and loaded lazily, related objects cached both ways."""
    login = make_login(scope="openid")
    found = CompiledLookup(Login, bearer_logins).get(login.pk)
    orm = bearer_logins().get(pk=login.pk)
    for ours, theirs in ((found, orm), (found.user, orm.user), (found.project, orm.project),
                         (found.client, orm.client), (found.client.access_policy, orm.client.access_policy),
                         (found.membership, orm.membership),
                         (found.membership.access_policy, orm.membership.access_policy)):
        assert type(ours) is type(theirs)
        assert _loaded(ours) == _loaded(theirs)
        assert (ours._state.adding, ours._state.db) == (theirs._state.adding, theirs._state.db) == (False, "default")
        assert ours.get_deferred_fields() == theirs.get_deferred_fields()
    assert "redirect_uri" in found.get_deferred_fields() and found.redirect_uri == login.redirect_uri
    assert list(found.membership.logins.all()) == [found]  # a real model instance: reverse managers work
    found.scope = "openid profile"
    found.save(update_fields=["scope"])
    assert Login.objects.get(pk=login.pk).scope == "openid profile"


def test_models_with_init_observers_go_through_django(monkeypatch):
    from django.db.models.signals import post_init

    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append(type(instance).__name__)
    post_init.connect(receiver, sender=ProjectMembership)
    try:
        login = make_login()
        seen.clear()
        found = CompiledLookup(Login, bearer_logins).get(login.pk)
        assert seen == ["ProjectMembership"] and found.membership.pk == login.membership_id
    finally:
        post_init.disconnect(receiver, sender=ProjectMembership)
