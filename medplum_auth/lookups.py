"""The reads every token, userinfo and API request makes: one plain SQL statement each.

Django compiles a queryset's SQL on every evaluation; for the seven-table Bearer lookup that
compilation cost more CPU than the query and everything else in a FHIR read. Here each lookup's
statement is written once per database from the models' metadata (``Model._meta``: tables,
columns, primary keys), run through ``connection.cursor()`` with the key as a parameter, and its
row converted with the fields' own ``to_python``/``from_db_value``. Only documented Django APIs:
a Django upgrade that changed them would fail the tests in ``tests/test_lookups.py``, which compare
every lookup with the ORM's answer on SQLite and PostgreSQL.

* :func:`bearer_login`: the Bearer request's login as a frozen :class:`BearerLogin` (what the
  revocation and enabled checks, the claims and the access policy read), nothing else.
* :data:`client_by_client_id`, :data:`login_by_code_for_update`, :data:`login_by_refresh_for_update`:
  the token endpoint's rows, which the same request updates, as model instances built by the
  documented ``Model.from_db`` with their related rows attached through the foreign keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from functools import cached_property
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connections, models, router
from django.db.transaction import TransactionManagementError

from .models import AccessPolicy, ClientApplication, Login, ProfileType, Project, ProjectMembership

# --- one statement: a root table, its many-to-one joins, a key -----------------------------------------


@dataclass(frozen=True)
class Join:
    """``alias`` is ``model`` reached from ``parent`` (an alias) through its foreign key ``field``."""

    alias: str
    model: type[models.Model]
    parent: str | None = None
    field: str | None = None
    columns: Sequence[str] | None = None  # field names; ``None`` = every concrete field


class Statement:
    """``SELECT`` the joins' columns ``WHERE root.key = %s`` (optionally ``FOR UPDATE`` of the root).

    The SQL and the converters are made on first use per database alias (never at import time:
    the user model and the database are settings), then only the key is bound.
    """

    def __init__(self, joins: Callable[[], list[Join]], key: str, *, for_update: bool = False):
        self._joins = joins
        self._key = key
        self._for_update = for_update
        self._prepared: dict[str, _Prepared] = {}

    @property
    def root(self) -> type[models.Model]:
        return self._joins()[0].model

    def rows(self, value: Any) -> dict[str, dict[str, Any] | None] | None:
        """``{alias: {attname: value} or None (no row joined)}`` of the row whose key is ``value``."""
        db = router.db_for_read(self.root)
        prepared = self._prepared.get(db)
        if prepared is None:
            prepared = self._prepared[db] = _Prepared(self._joins(), self._key, self._for_update, db)
        return prepared.run(value)


class _Prepared:
    def __init__(self, joins: list[Join], key: str, for_update: bool, db: str):
        connection = connections[db]
        qn = connection.ops.quote_name
        self.db, self.for_update = db, for_update
        root = joins[0].model._meta
        self.key_field = root.pk if key == "pk" else root.get_field(key)
        self.tables: list[tuple[str, list[models.Field], list[Callable[[Any], Any]]]] = []
        columns, sources = [], [f"{qn(root.db_table)} {qn(joins[0].alias)}"]
        models_by_alias = {}
        for join in joins:
            meta = join.model._meta
            models_by_alias[join.alias] = join.model
            fields = [meta.pk, *(meta.get_field(n) for n in join.columns if n != meta.pk.name)] \
                if join.columns is not None else list(meta.concrete_fields)
            self.tables.append((join.alias, fields, [_converter(f, connection) for f in fields]))
            columns += [f"{qn(join.alias)}.{qn(f.column)}" for f in fields]
            if join.parent is not None:
                fk = models_by_alias[join.parent]._meta.get_field(join.field)
                kind = "LEFT OUTER JOIN" if fk.null else "INNER JOIN"
                target = fk.target_field.column
                sources.append(f"{kind} {qn(meta.db_table)} {qn(join.alias)} "
                               f"ON {qn(join.alias)}.{qn(target)} = {qn(join.parent)}.{qn(fk.column)}")
        where = f"{qn(joins[0].alias)}.{qn(self.key_field.column)} = %s"
        lock = ""
        if for_update and connection.features.has_select_for_update:
            lock = f" FOR UPDATE OF {qn(joins[0].alias)}" if connection.features.has_select_for_update_of \
                else " FOR UPDATE"
        self.sql = f"SELECT {', '.join(columns)} FROM {' '.join(sources)} WHERE {where}{lock}"

    def run(self, value: Any) -> dict[str, dict[str, Any] | None] | None:
        connection = connections[self.db]
        if self.for_update and connection.get_autocommit():  # as Django: a lock needs a transaction
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        try:
            value = self.key_field.to_python(value)
            if value is None or (isinstance(value, str) and "\x00" in value):  # text cannot hold NUL
                return None
            param = self.key_field.get_db_prep_value(value, connection)
        except (ValidationError, TypeError, ValueError):
            return None  # a value the column cannot hold matches no row
        with connection.cursor() as cursor:
            cursor.execute(self.sql, [param])
            row = cursor.fetchone()
        if row is None:
            return None
        out: dict[str, dict[str, Any] | None] = {}
        start = 0
        for alias, fields, converters in self.tables:
            values = row[start:start + len(fields)]
            start += len(fields)
            if values[0] is None:  # the primary key: no row joined
                out[alias] = None
                continue
            out[alias] = {f.attname: convert(v) if v is not None else None
                          for f, convert, v in zip(fields, converters, values, strict=True)}
        return out


def _converter(field: models.Field, connection: Any) -> Callable[[Any], Any]:
    """The field's own conversion of a database value: ``from_db_value`` where it has one (JSON),
    else ``to_python`` (UUID text on SQLite, 0/1 booleans), datetimes made aware as Django does."""
    target = field.target_field if field.is_relation else field
    if hasattr(target, "from_db_value"):
        return lambda value: target.from_db_value(value, None, connection)
    if isinstance(target, models.DateTimeField) and settings.USE_TZ:
        def aware(value: Any) -> Any:
            value = target.to_python(value)
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value
        return aware
    return target.to_python


def _instance(model: type[models.Model], db: str, values: dict[str, Any]) -> models.Model:
    return model.from_db(db, list(values), list(values.values()))  # Django's documented loading hook


class ModelLookup:
    """A lookup that answers model instances (root plus every joined row, attached)."""

    def __init__(self, joins: Callable[[], list[Join]], key: str, *, for_update: bool = False):
        self._joins = joins
        self._statement = Statement(joins, key, for_update=for_update)

    def get(self, value: Any) -> Any:
        rows = self._statement.rows(value)
        if rows is None:
            return None
        joins = self._joins()
        db = router.db_for_read(joins[0].model)
        objects: dict[str, models.Model | None] = {}
        for join in joins:
            values = rows[join.alias]
            objects[join.alias] = None if values is None else _instance(join.model, db, values)
        for join in joins[1:]:
            parent = objects[join.parent]
            if parent is not None:
                setattr(parent, join.field, objects[join.alias])  # the forward descriptor: caches it
        return objects[joins[0].alias]


def _login_joins() -> list[Join]:
    return [Join("l", Login), Join("u", get_user_model(), "l", "user"), Join("p", Project, "l", "project"),
            Join("m", ProjectMembership, "l", "membership")]


#: A client by ``client_id``, with its project.
client_by_client_id = ModelLookup(
    lambda: [Join("c", ClientApplication), Join("p", Project, "c", "project")], "client_id")

#: A login by the digest of its authorization code, locked (a redemption is decided once); with its
#: user, project and membership.
login_by_code_for_update = ModelLookup(_login_joins, "code_digest", for_update=True)

#: A login by the digest of its current refresh token, locked (a rotation is decided once).
login_by_refresh_for_update = ModelLookup(_login_joins, "refresh_digest", for_update=True)


# --- the Bearer request's login, as frozen values --------------------------------------------------------


@dataclass(frozen=True)
class PolicyRow:
    """An access policy's rules (``AccessPolicy.resources``)."""

    id: uuid.UUID
    project_id: uuid.UUID
    resources: Any


@dataclass(frozen=True)
class UserRow:
    """What claims and checks read of the user. ``get_full_name`` is ``AbstractUser``'s."""

    id: Any
    username: str
    email: str
    first_name: str
    last_name: str
    is_active: bool
    is_superuser: bool

    @property
    def pk(self) -> Any:
        return self.id

    def get_username(self) -> str:
        return self.username

    def get_full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


@dataclass(frozen=True)
class ProjectRow:
    id: uuid.UUID
    name: str
    active: bool

    @property
    def pk(self) -> uuid.UUID:
        return self.id


@dataclass(frozen=True)
class ClientRow:
    id: Any
    client_id: str
    name: str
    status: str
    project_id: uuid.UUID
    access_policy: PolicyRow | None

    @property
    def pk(self) -> Any:
        return self.id

    @property
    def reference(self) -> str:
        return ClientApplication.reference_for(self.client_id)


@dataclass(frozen=True)
class MembershipRow:
    id: uuid.UUID
    project_id: uuid.UUID
    user_id: Any
    active: bool
    admin: bool
    profile_type: str
    profile_id: str
    profile_display: str
    access_parameters: Any
    access_policy: PolicyRow | None

    @property
    def pk(self) -> uuid.UUID:
        return self.id

    @property
    def profile(self) -> str:
        return f"{self.profile_type}/{self.profile_id}"

    def policy_parameters(self) -> dict[str, str]:
        return ProjectMembership.parameters_for(self.access_parameters, self.profile)


@dataclass(frozen=True)
class BearerLogin:
    """The login behind a Bearer token, read in one statement on every API request: the revocation
    and enabled checks (:func:`medplum_auth.bearer.check_login`), the claims and both access policies.

    Attribute names are :class:`~medplum_auth.models.Login`'s; :meth:`load` gives the model when a
    request must change the login or read more of it.
    """

    id: uuid.UUID
    user_id: Any
    client_id: Any
    project_id: uuid.UUID
    membership_id: uuid.UUID | None
    scope: str
    auth_method: str
    auth_time: Any
    revoked_at: Any
    refresh_expires_at: Any
    launch_patient: str
    launch_encounter: str
    resource_scopes_withheld: bool
    user: UserRow | None
    project: ProjectRow
    client: ClientRow
    membership: MembershipRow | None

    @property
    def pk(self) -> uuid.UUID:
        return self.id

    @property
    def profile(self) -> str | None:
        if self.membership is not None:
            return self.membership.profile
        return None if self.user_id else self.client.reference

    @property
    def patient_context(self) -> str | None:
        """``Patient/<id>`` the login acts for: the launch patient, else a Patient's own profile."""
        if self.launch_patient:
            return self.launch_patient
        if self.membership is not None and self.membership.profile_type == ProfileType.PATIENT:
            return self.membership.profile
        return None

    def load(self) -> Login:
        """The :class:`~medplum_auth.models.Login` itself (one more query), for the rarer requests
        that change it (logout) or read more of it (``/auth/me``, ``/auth/launch``, MFA)."""
        return Login.objects.select_related("user", "project", "client", "membership").get(pk=self.id)

    @cached_property
    def user_model(self) -> Any:
        """The Django user (one query, on first use), e.g. for a host API's ``request.user``."""
        return get_user_model()._default_manager.get(pk=self.user_id) if self.user_id else None


_LOGIN_COLUMNS = ("user", "client", "project", "membership", "scope", "auth_method", "auth_time", "revoked_at",
                  "refresh_expires_at", "launch_patient", "launch_encounter", "resource_scopes_withheld")
_POLICY_COLUMNS = ("project", "resources")


def _bearer_joins() -> list[Join]:
    user_model = get_user_model()
    present = {f.name for f in user_model._meta.concrete_fields}
    user_columns = [n for n in (user_model.USERNAME_FIELD, "email", "first_name", "last_name", "is_active",
                                "is_superuser") if n in present]
    return [
        Join("l", Login, columns=_LOGIN_COLUMNS),
        Join("u", user_model, "l", "user", columns=user_columns),
        Join("p", Project, "l", "project", columns=("name", "active")),
        Join("c", ClientApplication, "l", "client", columns=("client_id", "name", "status", "project",
                                                              "access_policy")),
        Join("cp", AccessPolicy, "c", "access_policy", columns=_POLICY_COLUMNS),
        Join("m", ProjectMembership, "l", "membership", columns=(
            "project", "user", "active", "admin", "profile_type", "profile_id", "profile_display",
            "access_parameters", "access_policy")),
        Join("mp", AccessPolicy, "m", "access_policy", columns=_POLICY_COLUMNS),
    ]


_bearer = Statement(_bearer_joins, "pk")


def _policy(values: dict[str, Any] | None) -> PolicyRow | None:
    return None if values is None else PolicyRow(values["id"], values["project_id"], values["resources"])


def bearer_login(login_id: Any) -> BearerLogin | None:
    """The login ``login_id`` (an access token's ``login_id`` claim) as :class:`BearerLogin`, or ``None``."""
    rows = _bearer.rows(login_id)
    if rows is None:
        return None
    login, user, project, client, membership = rows["l"], rows["u"], rows["p"], rows["c"], rows["m"]
    username_field = get_user_model().USERNAME_FIELD
    return BearerLogin(
        id=login["id"], user_id=login["user_id"], client_id=login["client_id"], project_id=login["project_id"],
        membership_id=login["membership_id"], scope=login["scope"], auth_method=login["auth_method"],
        auth_time=login["auth_time"], revoked_at=login["revoked_at"], refresh_expires_at=login["refresh_expires_at"],
        launch_patient=login["launch_patient"], launch_encounter=login["launch_encounter"],
        resource_scopes_withheld=login["resource_scopes_withheld"],
        user=None if user is None else UserRow(
            id=user[get_user_model()._meta.pk.attname], username=user[username_field],
            email=user.get("email", ""), first_name=user.get("first_name", ""), last_name=user.get("last_name", ""),
            is_active=user.get("is_active", True), is_superuser=user.get("is_superuser", False)),
        project=ProjectRow(id=project["id"], name=project["name"], active=project["active"]),
        client=ClientRow(id=client["id"], client_id=client["client_id"], name=client["name"], status=client["status"],
                         project_id=client["project_id"], access_policy=_policy(rows["cp"])),
        membership=None if membership is None else MembershipRow(
            id=membership["id"], project_id=membership["project_id"], user_id=membership["user_id"],
            active=membership["active"], admin=membership["admin"], profile_type=membership["profile_type"],
            profile_id=membership["profile_id"], profile_display=membership["profile_display"],
            access_parameters=membership["access_parameters"], access_policy=_policy(rows["mp"])),
    )
