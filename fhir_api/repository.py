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
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from medplum_auth.access import Decision, EffectivePolicy
from medplum_auth.contrib.rest_framework.exceptions import (
    Forbidden,
    Gone,
    InvalidResource,
    PreconditionFailed,
    ResourceNotFound,
)
from medplum_auth.queries import CompiledLookup, one_or_none

from .models import Resource, ResourceVersion, SearchIndex
from .query import Condition, Include, Target, condition_q, criteria_conditions, filters_match, filters_q
from .search_params import ID_RE, SEARCH_PARAMETERS, compartment, index_values, param_values
from .validation import validate_resource

ALLOWED = Decision("allowed")
SORTS = {"_lastUpdated": ("last_updated", "pk"), "-_lastUpdated": ("-last_updated", "-pk")}


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
class Page:
    rows: list[Resource]
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

    def _base(self, resource_type: str) -> QuerySet[Resource]:
        return Resource.objects.filter(project_id=self.project_id, resource_type=resource_type)

    def _scoped(self, resource_type: str, decision: Decision) -> QuerySet[Resource]:
        queryset = self._base(resource_type)
        if decision.outcome == "filtered":
            queryset = queryset.filter(filters_q(self.project_id, resource_type, decision.filters))
        return queryset

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

    def read(self, resource_type: str, resource_id: str) -> Resource:
        """The current version, if this caller may read it; else 404, as if it did not exist.

        Fetched by its unique key and checked against the policy's filters in Python (the rules
        :func:`~fhir_api.query.filters_match` shares with the SQL form), as vread and history
        check versions: one primary-key-like lookup instead of the policy's subqueries.
        """
        decision = self.decide(resource_type, "read")
        row = _current_resource.get(self.project_id, resource_type, resource_id)
        if row is None or not self._version_allowed(resource_type, decision, resource_id, row.content,
                                                    row.last_updated):
            raise ResourceNotFound()
        if row.deleted:
            raise Gone()
        return row

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
               offset: int = 0, count: int = 20, total_only: bool = False) -> Page:
        decision = self.decide(resource_type, "search")
        self._check_searchable(resource_type, conditions)
        queryset = self._scoped(resource_type, decision).filter(deleted=False)
        imposed = _imposed_conditions(resource_type, decision)
        for condition in conditions:
            if condition not in imposed:  # the policy's own copy of it is in the query already
                queryset = queryset.filter(condition_q(self.project_id, resource_type, condition))
        if total_only or count == 0:
            return Page([], queryset.count())
        ordered = queryset.order_by(*SORTS.get(sort or "", ("pk",)))
        rows = list(ordered[offset:offset + count])
        if len(rows) < count and (rows or offset == 0):
            return Page(rows, offset + len(rows))  # the last page: its end is the total
        return Page(rows, queryset.count())

    def include(self, resource_type: str, rows: list[Resource], includes: list[Include]) -> list[Resource]:
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
        included: list[Resource] = []
        for target_type, ids in wanted.items():
            decision = ALLOWED if self.policy is None else self.policy.decide(target_type, "read")
            if not decision.permitted:
                continue
            included.extend(self._scoped(target_type, decision).filter(resource_id__in=ids, deleted=False)
                            .order_by("pk"))
        return included

    # --- writes ----------------------------------------------------------------------------

    def create(self, resource_type: str, content: dict[str, Any], *, resource_id: str | None = None,
               validate: bool = True) -> Resource:
        """Create a resource; the server assigns the id (``resource_id`` only for the system)."""
        decision = self.decide(resource_type, "create")
        content = self._prepare(resource_type, content)
        for path in self.protected_fields(resource_type):
            restore_path({}, content, path.split("."))
        if resource_id is None or self.policy is not None:
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

    def update(self, resource_type: str, resource_id: str, content: dict[str, Any], *,
               if_match: int | None = None) -> Resource:
        decision = self.decide(resource_type, "update")
        content = self._prepare(resource_type, content)
        if content.get("id") != resource_id:
            raise InvalidResource(f"The resource id must be {resource_id!r}, as in the URL", expression=[
                f"{resource_type}.id"])
        with transaction.atomic():
            row = self._locked(resource_type, resource_id, decision)
            if if_match is not None and if_match != row.version_id:
                raise PreconditionFailed(f"Version {if_match} is not current (current: {row.version_id})")
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
        SearchIndex.objects.bulk_create([
            SearchIndex(resource=row, project_id=row.project_id, resource_type=row.resource_type, name=name,
                        value=value)
            for name, values in index.items() for value in values
        ])


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


_current_resource = CompiledLookup(Resource, Resource.objects.all, keys=("project", "resource_type", "resource_id"))
