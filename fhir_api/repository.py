"""The one read and write path for FHIR resources, with the access policy enforced inside it.

Every query is scoped to one project. For a policy decision (``medplum_auth.access``):

* ``forbidden`` → 403;
* ``filtered`` → the filters go into the query, so a resource outside the policy is not found
  (404, as if missing) and searches are filtered before counting and paging; a version served
  by vread or ``_history`` must satisfy the filters too;
* writes: the current version must be reachable (else 404, or 403 when it is readable but not
  writable), and the new version must satisfy the filters (else 403), checked in Python on the
  index values computed for it;
* ``hiddenFields`` are removed from what is served; on writes ``hiddenFields`` and
  ``readonlyFields`` are put back from the current version (removed on create).

A repository without a policy (``policy=None``) is the system: used for profile resources
created on invite and by tests, never for a request.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, cached_property
from typing import Any

import jsonpatch
import jsonpointer
from django.db import connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet
from django.utils import timezone

from medplum_auth.access import COMPARTMENT_PARAM, Decision, EffectivePolicy
from medplum_auth.contrib.rest_framework.exceptions import (
    Forbidden,
    Gone,
    InvalidResource,
    PreconditionFailed,
    ResourceNotFound,
    UnprocessablePatch,
)
from medplum_auth.queries import one_or_none

from .models import Resource, ResourceVersion, SearchIndex
from .query import (
    RESOURCE_TABLE,
    Condition,
    Include,
    Match,
    Target,
    Where,
    all_of,
    any_of,
    column,
    condition_where,
    criteria_conditions,
    filters_match,
    filters_where,
    project_value,
)
from .search_params import ID_RE, SEARCH_PARAMETERS, compartment, index_rows, index_values, param_values
from .validation import validate_resource

ALLOWED = Decision("allowed")
SORTS = {"_lastUpdated": (("last_updated", "ASC"), ("id", "ASC")),
         "-_lastUpdated": (("last_updated", "DESC"), ("id", "DESC"))}
BY_ID = (("id", "ASC"),)
PAGE_ALIAS = "page_row"
MAX_REVINCLUDES = 1000


def format_instant(moment: datetime) -> str:
    """FHIR ``instant`` in UTC with milliseconds, as Medplum writes ``meta.lastUpdated``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _now() -> datetime:
    now = timezone.now()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def remove_path(node: Any, segments: list[str]) -> None:
    """Remove the element at ``segments`` (every occurrence, through lists)."""
    if isinstance(node, list):
        for item in node:
            remove_path(item, segments)
    elif isinstance(node, dict) and segments:
        if len(segments) == 1:
            node.pop(segments[0], None)
        elif segments[0] in node:
            remove_path(node[segments[0]], segments[1:])


def restore_path(old: dict[str, Any], new: dict[str, Any], segments: list[str]) -> None:
    """Make the element at ``segments`` in ``new`` what it is in ``old`` (absent if absent).

    Through a list the whole enclosing element is restored: coarser than the path, never
    letting a protected value change.
    """
    key = segments[0]
    old_child, new_child = old.get(key), new.get(key)
    if len(segments) > 1 and isinstance(new_child, dict) and (old_child is None or isinstance(old_child, dict)):
        restore_path(old_child or {}, new_child, segments[1:])
        return
    if key in old:
        new[key] = copy.deepcopy(old[key])
    else:
        new.pop(key, None)


@dataclass
class Found:
    """A current resource as read for serving: its JSON text as the database returns it.

    The text is served as it is (spliced into the response) unless fields must be hidden; it is
    parsed only when something reads :attr:`content` (``_include``, hidden fields, the patient
    picker), which saves a JSON parse and a JSON dump per resource served.
    """

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime | None  # only when asked for (a Bundle entry does not need it)
    deleted: bool
    text: str

    @cached_property
    def content(self) -> dict[str, Any]:
        return json.loads(self.text)


@dataclass
class Page:
    rows: list[Found]
    total: int


class Repository:
    def __init__(self, project_id: Any, policy: EffectivePolicy | None):
        self.project_id = project_id
        self.policy = policy

    # --- policy ----------------------------------------------------------------------------

    def decide(self, resource_type: str, interaction: str) -> Decision:
        if self.policy is None:
            return ALLOWED
        decision = self.policy.decide(resource_type, interaction)
        if not decision.permitted:
            raise Forbidden()
        return decision

    def _scoped(self, resource_type: str, decision: Decision) -> QuerySet[Resource]:
        queryset = Resource.objects.filter(project_id=self.project_id, resource_type=resource_type)
        if decision.outcome == "filtered":
            connection = connections[router.db_for_read(Resource)]
            queryset = queryset.filter(filters_where(connection, self.project_id, resource_type,
                                                     decision.filters).expression())
        return queryset

    def _where(self, connection: BaseDatabaseWrapper, resource_type: str, decision: Decision,
               conditions: Sequence[Condition] = ()) -> Where:
        """This project's current (not deleted) resources of ``resource_type`` that the decision
        and ``conditions`` allow."""
        parts = [Where(f"{column(connection, 'project_id')} = %s AND {column(connection, 'resource_type')} = %s "
                       f"AND {column(connection, 'deleted')} = %s",
                       (project_value(connection, self.project_id), resource_type, False))]
        if decision.outcome == "filtered":
            parts.append(filters_where(connection, self.project_id, resource_type, decision.filters))
        parts.extend(condition_where(connection, self.project_id, resource_type, c) for c in conditions)
        return all_of(parts)

    def _version_allowed(self, resource_type: str, decision: Decision, resource_id: str,
                         content: dict[str, Any] | None, last_updated: datetime) -> bool:
        if decision.outcome != "filtered":
            return True
        if content is None:  # a delete marker: nothing of the resource is served
            return True
        return filters_match(resource_type, decision.filters, _target(resource_type, resource_id, content,
                                                                      last_updated))

    def hidden_fields(self, resource_type: str) -> tuple[str, ...]:
        return self.policy.hidden_fields(resource_type) if self.policy is not None else ()

    def protected_fields(self, resource_type: str) -> tuple[str, ...]:
        if self.policy is None:
            return ()
        return tuple(dict.fromkeys(self.policy.hidden_fields(resource_type)
                                   + self.policy.readonly_fields(resource_type)))

    def present_json(self, found: Found) -> str:
        """A read resource's JSON as this caller may see it: the stored text unless fields are hidden."""
        if not self.hidden_fields(found.resource_type):
            return found.text
        return json.dumps(self.present(found.resource_type, found.content), separators=(",", ":"),
                          ensure_ascii=False)

    def present(self, resource_type: str, content: dict[str, Any]) -> dict[str, Any]:
        """The content as this caller may see it (``hiddenFields`` removed)."""
        hidden = self.hidden_fields(resource_type)
        if not hidden:
            return content
        content = copy.deepcopy(content)
        for path in hidden:
            remove_path(content, path.split("."))
        return content

    # --- reads -----------------------------------------------------------------------------

    def read(self, resource_type: str, resource_id: str) -> Found:
        """The current version, if this caller may read it; else 404, as if it did not exist.

        One statement by the unique key; the policy's filters are a column of it (not a
        condition), so a row outside them is told apart from a missing one only here, and both
        are 404.
        """
        decision = self.decide(resource_type, "read")
        connection = connections[router.db_for_read(Resource)]
        where = Where(f"{column(connection, 'project_id')} = %s AND {column(connection, 'resource_type')} = %s AND "
                      f"{column(connection, 'resource_id')} = %s",
                      (project_value(connection, self.project_id), resource_type, resource_id))
        allowed = Where("1")
        if decision.outcome == "filtered":
            filters = filters_where(connection, self.project_id, resource_type, decision.filters)
            allowed = Where(f"CASE WHEN ({filters.sql}) THEN 1 ELSE 0 END", filters.params)
        rows = _select(connection, resource_type, where, extra=allowed)
        if not rows or not rows[0][1]:
            raise ResourceNotFound()
        found = rows[0][0]
        if found.deleted:
            raise Gone()
        return found

    def vread(self, resource_type: str, resource_id: str, version_id: str) -> ResourceVersion:
        decision = self.decide(resource_type, "vread")
        row = one_or_none(self._scoped(resource_type, decision).filter(resource_id=resource_id))
        if row is None or not version_id.isdigit():
            raise ResourceNotFound()
        version = row.versions.filter(version_id=int(version_id)).first()
        if version is None or not self._version_allowed(resource_type, decision, resource_id, version.content,
                                                        version.last_updated):
            raise ResourceNotFound()
        if version.deleted:
            raise Gone()
        return version

    def history(self, resource_type: str, resource_id: str) -> list[ResourceVersion]:
        """Versions newest first; versions outside a filtered policy are left out."""
        decision = self.decide(resource_type, "history")
        row = one_or_none(self._scoped(resource_type, decision).filter(resource_id=resource_id))
        if row is None:
            raise ResourceNotFound()
        versions = list(row.versions.order_by("-version_id"))
        return [v for v in versions
                if self._version_allowed(resource_type, decision, resource_id, v.content, v.last_updated)]

    def search(self, resource_type: str, conditions: list[Condition], *, sort: str | None = None,
               offset: int = 0, count: int = 20, total_only: bool = False, timestamps: bool = False) -> Page:
        """One page of matches and the total, in one statement (a second only past the end).

        The matches' ``last_updated`` is read only with ``timestamps`` (a Bundle entry does not need it).
        """
        decision = self.decide(resource_type, "search")
        self._check_searchable(resource_type, conditions)
        imposed = _imposed_conditions(resource_type, decision)
        # The policy's own copy of a search condition is in the query already.
        conditions = [condition for condition in conditions if condition not in imposed]
        connection = connections[router.db_for_read(Resource)]
        where = self._where(connection, resource_type, decision, conditions)
        if total_only or count == 0:
            return Page([], _count(connection, where))
        rows = _select(connection, resource_type, where, order=SORTS.get(sort or "", BY_ID), limit=(count, offset),
                       timestamps=timestamps)
        if not rows:
            return Page([], _count(connection, where) if offset else 0)
        return Page([found for found, _ in rows], rows[0][1])

    def include(self, resource_type: str, rows: list[Found], includes: list[Include]) -> list[Found]:
        """The resources that the matches' ``includes`` refer to and that this caller may read.

        Each one passes the caller's own ``read`` decision for its type (Medplum reads included
        references): in the query, project-scoped, filtered as a read is, so a resource outside
        the policy is left out as if missing and a type the policy forbids contributes nothing
        (not an error). Deleted resources and types this server does not hold are left out.
        """
        self._check_hidden_params(resource_type, [include.param for include in includes])
        if not rows or not includes:
            return []
        params = SEARCH_PARAMETERS[resource_type]
        seen = {(resource_type, row.resource_id) for row in rows}
        wanted: dict[str, list[str]] = {}
        for row in rows:
            for include in includes:
                for reference in param_values(params[include.param], row.content):
                    target_type, _, target_id = reference.partition("/")
                    if (include.accepts(reference) and target_type in SEARCH_PARAMETERS
                            and (target_type, target_id) not in seen):
                        seen.add((target_type, target_id))
                        wanted.setdefault(target_type, []).append(target_id)
        included: list[Found] = []
        connection = connections[router.db_for_read(Resource)]
        for target_type, ids in wanted.items():
            decision = ALLOWED if self.policy is None else self.policy.decide(target_type, "read")
            if not decision.permitted:
                continue
            where = self._where(connection, target_type, decision,
                                [Condition("_id", "id", tuple(Match("exact", i) for i in ids))])
            included.extend(found for found, _ in _select(connection, target_type, where, order=BY_ID,
                                                          timestamps=False))
        return included

    def revinclude(self, resource_type: str, rows: list[Found], revincludes: list[Include],
                   seen: set[tuple[str, str]]) -> tuple[list[Found], bool]:
        """The resources whose ``param`` refers to one of the matches (``_revinclude``), each one
        passing the caller's own ``read`` decision for its type, as :meth:`include`'s do.

        At most :data:`MAX_REVINCLUDES` in all, in id order per parameter; the flag says whether
        more were left out (the caller says so in the Bundle). ``seen`` (matches and includes)
        are not repeated.
        """
        for rev in revincludes:
            self._check_hidden_params(rev.source, [rev.param])
        if not rows or not revincludes:
            return [], False
        references = tuple(Match("exact", f"{resource_type}/{row.resource_id}") for row in rows)
        connection = connections[router.db_for_read(Resource)]
        found: list[Found] = []
        truncated = False
        for rev in revincludes:
            decision = ALLOWED if self.policy is None else self.policy.decide(rev.source, "read")
            if not decision.permitted:
                continue
            where = self._where(connection, rev.source, decision, [Condition(rev.param, "index", references)])
            # One more than there is room for, beyond what may be skipped as seen: enough to tell
            # whether any were left out.
            room = MAX_REVINCLUDES - len(found)
            for row, _ in _select(connection, rev.source, where, order=BY_ID, limit=(room + 1 + len(seen), 0),
                                  timestamps=False):
                if (row.resource_type, row.resource_id) in seen:
                    continue
                if len(found) == MAX_REVINCLUDES:
                    truncated = True
                    break
                seen.add((row.resource_type, row.resource_id))
                found.append(row)
        return found, truncated

    def everything(self, patient_id: str, types: Sequence[str], conditions: Sequence[Condition], *,
                   offset: int, count: int) -> Page:
        """One page of the Patient's compartment (the ``patient`` column :func:`compartment`
        fills), the Patient included, in (type, id) order: each type of ``types`` as far as this
        caller may search it, types it may not are left out. ``conditions`` are type-independent
        (``_lastUpdated``). 404 when this caller cannot read the Patient itself.
        """
        self.read("Patient", patient_id)
        connection = connections[router.db_for_read(Resource)]
        conditions = [Condition(COMPARTMENT_PARAM, "compartment", (Match("exact", f"Patient/{patient_id}"),)),
                      *conditions]
        plain, parts = [], []
        for resource_type in types:
            decision = ALLOWED if self.policy is None else self.policy.decide(resource_type, "search")
            if decision.outcome == "filtered":
                parts.append(self._where(connection, resource_type, decision, conditions))
            elif decision.permitted:
                plain.append(resource_type)
        if plain:  # the types searched without filters: one condition on the type column
            parts.append(all_of([
                Where(f"{column(connection, 'project_id')} = %s AND {column(connection, 'deleted')} = %s",
                      (project_value(connection, self.project_id), False)),
                Where(f"{column(connection, 'resource_type')} IN ({', '.join(['%s'] * len(plain))})", tuple(plain)),
                *(condition_where(connection, self.project_id, "Patient", c) for c in conditions)]))
        if not parts:
            return Page([], 0)
        where = any_of(parts)
        if count == 0:
            return Page([], _count(connection, where))
        rows = _select(connection, None, where, order=(("resource_type", "ASC"), ("id", "ASC")),
                       limit=(count, offset), timestamps=False)
        if not rows:
            return Page([], _count(connection, where) if offset else 0)
        return Page([found for found, _ in rows], rows[0][1])

    # --- writes ----------------------------------------------------------------------------

    def create(self, resource_type: str, content: dict[str, Any], *, resource_id: str | None = None,
               validate: bool = True, new_id: uuid.UUID | None = None) -> Resource:
        """Create a resource; the server assigns the id (``resource_id`` only for the system).

        ``new_id`` is an id the server chose beforehand (a transaction's ``urn:uuid:`` entry, whose
        references are rewritten before the entries are stored): a UUID, never a client's text.
        """
        decision = self.decide(resource_type, "create")
        content = self._prepare(resource_type, content)
        for path in self.protected_fields(resource_type):
            restore_path({}, content, path.split("."))
        if new_id is not None:
            resource_id = str(new_id)
        elif resource_id is None or self.policy is not None:
            resource_id = str(uuid.uuid4())
        now = _now()
        content = _with_meta(resource_type, resource_id, content, 1, now)
        if validate:
            validate_resource(resource_type, content)
        index = index_values(resource_type, content)
        patient = compartment(resource_type, resource_id, index)
        self._check_new(resource_type, decision, Target(resource_id, patient, now, index))
        with transaction.atomic():
            row = Resource.objects.create(
                project_id=self.project_id, resource_type=resource_type, resource_id=resource_id, version_id=1,
                last_updated=now, content=content, patient=patient)
            ResourceVersion.objects.create(resource=row, version_id=1, last_updated=now, content=content)
            self._write_index(row, index)
        return row

    def create_if_none_exist(self, resource_type: str, content: dict[str, Any], criteria: list[Condition],
                             *, new_id: uuid.UUID | None = None) -> Resource | Found:
        """FHIR conditional create (``If-None-Exist``): the match (a :class:`Found`) when exactly
        one resource this caller can see matches ``criteria``, else the new :class:`Resource`;
        412 when several match. The caller needs search as well as create.

        On PostgreSQL the check and the create hold a transaction-scoped advisory lock on the
        project, type and criteria, so two concurrent identical requests create one resource.
        """
        self.decide(resource_type, "create")
        with transaction.atomic():
            found = self.match(resource_type, criteria, "If-None-Exist")
            if found is not None:
                return found
            return self.create(resource_type, content, new_id=new_id)

    def match(self, resource_type: str, criteria: list[Condition], what: str) -> Found | None:
        """The one resource this caller can search that matches ``criteria`` (``None`` if none;
        412 if several), for a conditional interaction named ``what``. Call it inside a transaction:
        on PostgreSQL it takes a transaction-scoped advisory lock on the project, type and criteria,
        so concurrent conditional writes with the same criteria decide one after the other."""
        connection = connections[router.db_for_write(Resource)]
        if connection.vendor == "postgresql":
            key = repr((str(self.project_id), resource_type, sorted(map(repr, criteria))))
            lock = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock])
        found = self.search(resource_type, criteria, count=2, timestamps=True).rows
        if len(found) > 1:
            raise PreconditionFailed(f"More than one resource matches {what}")
        return found[0] if found else None

    def update_conditional(self, resource_type: str, content: dict[str, Any], criteria: list[Condition], *,
                           if_match: int | None = None, new_id: uuid.UUID | None = None) -> tuple[Resource, bool]:
        """FHIR conditional update (``PUT [type]?search``): no match creates (``True``), one match is
        updated (``False``), several are 412. The search sees only what this caller may search;
        the caller needs update (and create, to create) as well as search."""
        self.decide(resource_type, "update")
        if not isinstance(content, dict):
            raise InvalidResource("The request body must be a FHIR resource (a JSON object)")
        with transaction.atomic():
            found = self.match(resource_type, criteria, "the conditional update")
            if found is None:
                if if_match is not None:
                    raise PreconditionFailed("If-Match names a version, but no resource matches the search")
                if content.get("id") is not None:
                    raise InvalidResource("No resource matches the search, and this server does not create "
                                          "resources with a client-chosen id", expression=f"{resource_type}.id")
                return self.create(resource_type, content, new_id=new_id), True
            if content.get("id", found.resource_id) != found.resource_id:
                raise InvalidResource(f"The resource id must be {found.resource_id!r}, the resource the search "
                                      "found", expression=f"{resource_type}.id")
            return self.update(resource_type, found.resource_id, {**content, "id": found.resource_id},
                               if_match=if_match), False

    def delete_conditional(self, resource_type: str, criteria: list[Condition]) -> str | None:
        """FHIR conditional delete (``DELETE [type]?search``): the id deleted, ``None`` when nothing
        matches, 412 when several do. The search sees only what this caller may search."""
        self.decide(resource_type, "delete")
        with transaction.atomic():
            found = self.match(resource_type, criteria, "the conditional delete")
            if found is None:
                return None
            self.delete(resource_type, found.resource_id)
            return found.resource_id

    def update(self, resource_type: str, resource_id: str, content: dict[str, Any], *,
               if_match: int | None = None) -> Resource:
        decision = self.decide(resource_type, "update")
        content = self._prepare_replacement(resource_type, resource_id, content)
        return self._replace(resource_type, resource_id, decision, lambda row: content, if_match)

    def patch(self, resource_type: str, resource_id: str, operations: Any, *, if_match: int | None = None
              ) -> Resource:
        """Apply a JSON Patch (RFC 6902) to the current version, as an update.

        The patch applies to the resource *as this caller may read it* (``hiddenFields`` removed),
        so a ``test`` operation cannot probe a hidden value, and the caller must be allowed to read
        the resource as well as update it. The result is then checked and stored as :meth:`update`
        stores a new version (hidden and read-only fields put back, the policy on both versions).
        """
        decision = self.decide(resource_type, "update")
        read = ALLOWED if self.policy is None else self.policy.decide(resource_type, "read")
        if not read.permitted:
            raise Forbidden()
        if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
            raise InvalidResource("A JSON Patch document must be an array of operation objects")

        def patched(row: Resource) -> dict[str, Any]:
            if read.outcome == "filtered" and not self._readable(resource_type, resource_id):
                raise Forbidden()
            try:
                content = jsonpatch.apply_patch(self.present(resource_type, row.content), operations)
            except (jsonpatch.JsonPatchTestFailed, jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException
                    ) as exc:
                raise UnprocessablePatch(f"The patch cannot be applied: {exc}") from None
            except (jsonpatch.InvalidJsonPatch, TypeError, ValueError) as exc:
                raise InvalidResource(f"Invalid JSON Patch: {exc}") from None
            return self._prepare_replacement(resource_type, resource_id, content)
        return self._replace(resource_type, resource_id, decision, patched, if_match)

    def _prepare_replacement(self, resource_type: str, resource_id: str, content: Any) -> dict[str, Any]:
        content = self._prepare(resource_type, content)
        if content.get("id") != resource_id:
            raise InvalidResource(f"The resource id must be {resource_id!r}, as in the URL", expression=[
                f"{resource_type}.id"])
        return content

    def _replace(self, resource_type: str, resource_id: str, decision: Decision,
                 new_content: Callable[[Resource], dict[str, Any]], if_match: int | None) -> Resource:
        """Store ``new_content(current row)`` as the next version (the row locked meanwhile)."""
        with transaction.atomic():
            row = self._locked(resource_type, resource_id, decision)
            if if_match is not None and if_match != row.version_id:
                raise PreconditionFailed(f"Version {if_match} is not current (current: {row.version_id})")
            content = new_content(row)
            for path in self.protected_fields(resource_type):
                restore_path(row.content or {}, content, path.split("."))
            now = _now()
            version = row.version_id + 1
            content = _with_meta(resource_type, resource_id, content, version, now)
            validate_resource(resource_type, content)
            index = index_values(resource_type, content)
            patient = compartment(resource_type, resource_id, index)
            self._check_new(resource_type, decision, Target(resource_id, patient, now, index))
            row.version_id, row.last_updated, row.content, row.patient, row.deleted = (
                version, now, content, patient, False)
            row.save(update_fields=["version_id", "last_updated", "content", "patient", "deleted"])
            ResourceVersion.objects.create(resource=row, version_id=version, last_updated=now, content=content)
            SearchIndex.objects.filter(resource=row).delete()
            self._write_index(row, index)
        return row

    def delete(self, resource_type: str, resource_id: str, *, if_match: int | None = None) -> None:
        """Mark deleted (a new version without content); the index is kept for history and 410s."""
        decision = self.decide(resource_type, "delete")
        with transaction.atomic():
            row = self._locked(resource_type, resource_id, decision)
            if if_match is not None and if_match != row.version_id:
                raise PreconditionFailed(f"Version {if_match} is not current (current: {row.version_id})")
            if row.deleted:
                return
            now = _now()
            row.version_id += 1
            row.last_updated, row.deleted = now, True
            row.save(update_fields=["version_id", "last_updated", "deleted"])
            ResourceVersion.objects.create(resource=row, version_id=row.version_id, last_updated=now, deleted=True,
                                           content=None)

    def validate(self, resource_type: str, content: Any) -> None:
        """400 unless ``content`` is a valid ``resource_type`` as a write would store it (its
        ``meta`` as the server sets it); no policy is involved and nothing is stored."""
        content = self._prepare(resource_type, content)
        resource_id = content.get("id") if isinstance(content.get("id"), str) else str(uuid.uuid4())
        validate_resource(resource_type, _with_meta(resource_type, resource_id, content, 1, _now()))

    # --- helpers ---------------------------------------------------------------------------

    def _prepare(self, resource_type: str, content: Any) -> dict[str, Any]:
        if not isinstance(content, dict):
            raise InvalidResource("The request body must be a FHIR resource (a JSON object)")
        if content.get("resourceType") != resource_type:
            raise InvalidResource(f"resourceType must be {resource_type!r}, as in the URL",
                                  expression=f"{resource_type}.resourceType")
        if "meta" in content and not isinstance(content["meta"], dict):
            raise InvalidResource("meta must be an object", expression=f"{resource_type}.meta")
        return copy.deepcopy(content)

    def _locked(self, resource_type: str, resource_id: str, decision: Decision) -> Resource:
        row = (self._scoped(resource_type, decision).filter(resource_id=resource_id)
               .select_for_update(of=("self",)).first())
        if row is not None:
            return row
        if self._readable(resource_type, resource_id):
            raise Forbidden()
        raise ResourceNotFound()

    def _readable(self, resource_type: str, resource_id: str) -> bool:
        if self.policy is None:
            return False
        decision = self.policy.decide(resource_type, "read")
        return decision.permitted and self._scoped(resource_type, decision).filter(resource_id=resource_id).exists()

    def _check_searchable(self, resource_type: str, conditions: list[Condition]) -> None:
        """Searching by a hidden element would reveal it one guess at a time: 403."""
        self._check_hidden_params(resource_type, [condition.name for condition in conditions])

    def _check_hidden_params(self, resource_type: str, names: list[str]) -> None:
        """403 when a search or ``_include`` parameter reads a hidden element."""
        hidden = self.hidden_fields(resource_type)
        if not hidden:
            return
        params = SEARCH_PARAMETERS.get(resource_type, {})
        for name in names:
            param = params.get(name)
            if param is None:
                continue
            for path in param.paths:
                if any(path == h or path.startswith(h + ".") or h.startswith(path + ".") for h in hidden):
                    raise Forbidden(f"Forbidden: {name} reads a hidden element")

    def _check_new(self, resource_type: str, decision: Decision, target: Target) -> None:
        if decision.outcome == "filtered" and not filters_match(resource_type, decision.filters, target):
            raise Forbidden("Forbidden: the new version would be outside your access policy")

    def _write_index(self, row: Resource, index: dict[str, list[str]]) -> None:
        SearchIndex.objects.bulk_create(_index_entries(row, index_rows(row.resource_type, index)))


def reindex(rows: QuerySet[Resource]) -> int:
    """Rewrite the ``SearchIndex`` rows of ``rows`` (locked meanwhile) from their stored content
    where they differ from what a write stores now; how many resources changed. For a change of
    the index format (``manage.py medplum_fhir_reindex``); searches are correct before and after it."""
    with transaction.atomic():
        locked = list(rows.select_for_update().order_by("pk"))
        stored: dict[Any, list[tuple[str, str, float | None]]] = {row.pk: [] for row in locked}
        for resource_id, *entry in SearchIndex.objects.filter(resource__in=locked).values_list(
                "resource_id", "name", "value", "number"):
            stored[resource_id].append(tuple(entry))
        wanted = {row.pk: sorted(index_rows(row.resource_type, index_values(row.resource_type, row.content or {})),
                                 key=repr) for row in locked}
        changed = [row for row in locked if sorted(stored[row.pk], key=repr) != wanted[row.pk]]
        SearchIndex.objects.filter(resource__in=changed).delete()
        SearchIndex.objects.bulk_create([entry for row in changed for entry in _index_entries(row, wanted[row.pk])])
    return len(changed)


def _index_entries(row: Resource, entries: Iterable[tuple[str, str, float | None]]) -> list[SearchIndex]:
    return [SearchIndex(resource=row, project_id=row.project_id, resource_type=row.resource_type, name=name,
                        value=value, number=number) for name, value, number in entries]


def _with_meta(resource_type: str, resource_id: str, content: dict[str, Any], version: int,
               now: datetime) -> dict[str, Any]:
    meta = content.get("meta") if isinstance(content.get("meta"), dict) else {}
    meta = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
    rest = {k: v for k, v in content.items() if k not in ("resourceType", "id", "meta")}
    return {"resourceType": resource_type, "id": resource_id,
            "meta": {"versionId": str(version), "lastUpdated": format_instant(now), **meta}, **rest}


def _imposed_conditions(resource_type: str, decision: Decision) -> frozenset[Condition]:
    """Conditions that every usable alternative of a filtered decision imposes (none otherwise).

    The decision's filters are in the query whatever the search asks (:meth:`Repository._scoped`),
    so a search condition among these adds nothing but a second copy of the same filter to the
    SQL (``Observation?subject=%patient`` and a search on ``subject=Patient/<id>``): it is left out.
    Alternatives this server cannot evaluate match nothing and impose nothing.
    """
    if decision.outcome != "filtered":
        return frozenset()
    imposed: frozenset[Condition] | None = None
    for criteria in decision.filters:
        conditions = criteria_conditions(resource_type, criteria)
        if conditions is not None:
            imposed = frozenset(conditions) if imposed is None else imposed & frozenset(conditions)
    return imposed or frozenset()


def _target(resource_type: str, resource_id: str, content: dict[str, Any], last_updated: datetime | None) -> Target:
    index = index_values(resource_type, content)
    return Target(resource_id, compartment(resource_type, resource_id, index), last_updated, index)


def valid_id(value: str) -> bool:
    return bool(ID_RE.match(value))


@cache
def _datetime_converter(connection: BaseDatabaseWrapper) -> Callable[[Any], Any]:
    """``last_updated`` as Django converts it from this backend (SQLite returns text)."""
    expression = Resource._meta.get_field("last_updated").get_col(RESOURCE_TABLE)
    converters = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)

    def convert(value: Any) -> Any:
        for converter in converters:
            value = converter(value, expression, connection)
        return value
    return convert


def _select(connection: BaseDatabaseWrapper, resource_type: str | None, where: Where, *, extra: Where | None = None,
            order: Sequence[tuple[str, str]] = (), limit: tuple[int, int] | None = None, timestamps: bool = True,
            ) -> list[tuple[Found, Any]]:
    """Current resources matching ``where`` as :class:`Found` rows, each with ``extra``'s value
    (rows of several types when ``resource_type`` is ``None``: each row's type is read with it).

    With ``limit`` (count, offset) the value is instead the number of all matches, and the page
    is chosen first, by id, with that count (a window over the same scan), before its rows are
    read (a deferred join): the other matches are never converted to JSON text.
    """
    table = connection.ops.quote_name(RESOURCE_TABLE)
    source = PAGE_ALIAS if limit is not None else RESOURCE_TABLE
    content = column(connection, "content", source)
    if connection.vendor == "postgresql":
        content += "::text"  # jsonb as its JSON text: served without a parse and a dump
    columns = ", ".join([column(connection, "resource_type", source) if resource_type is None else "NULL",
                         column(connection, "resource_id", source), column(connection, "version_id", source),
                         column(connection, "last_updated", source) if timestamps else "NULL",
                         column(connection, "deleted", source), content,
                         f"{connection.ops.quote_name('page')}.{connection.ops.quote_name('total')}"
                         if limit is not None else extra.sql if extra is not None else "NULL"])

    def order_by(table_name: str) -> str:
        if not order:
            return ""
        return " ORDER BY " + ", ".join(f"{column(connection, name, table_name)} {direction}"
                                        for name, direction in order)
    if limit is None:
        params = (*(extra.params if extra is not None else ()), *where.params)
        sql = f"SELECT {columns} FROM {table} WHERE {where.sql}{order_by(RESOURCE_TABLE)}"
    else:
        params = where.params
        page, alias = connection.ops.quote_name("page"), connection.ops.quote_name(PAGE_ALIAS)
        sql = (f"SELECT {columns} FROM {table} {alias} INNER JOIN (SELECT {column(connection, 'id')}, COUNT(*) OVER () "
               f"AS {connection.ops.quote_name('total')} FROM {table} "
               f"WHERE {where.sql}{order_by(RESOURCE_TABLE)} LIMIT %s OFFSET %s) {page} "
               f"ON {page}.{connection.ops.quote_name('id')} = {column(connection, 'id', PAGE_ALIAS)}"
               f"{order_by(PAGE_ALIAS)}")
        params += limit
    convert = _datetime_converter(connection) if timestamps else lambda value: None
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [(Found(resource_type or kind, resource_id, version_id, convert(last_updated), bool(deleted), text), value)
            for kind, resource_id, version_id, last_updated, deleted, text, value in rows]


def _count(connection: BaseDatabaseWrapper, where: Where) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(RESOURCE_TABLE)} WHERE {where.sql}",
                       where.params)
        return cursor.fetchone()[0]
