"""FHIR operations: ``$validate`` (type and instance level) and ``Patient/[id]/$everything``.

Both run on the caller's :class:`~fhir_api.repository.Repository`, so the access policy and the
SMART scopes decide as they do for the interactions (:mod:`fhir_api.interactions`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction

from medplum_auth.contrib.rest_framework.exceptions import InvalidResource

from .interactions import ALL_OK, IGNORED_PARAMS, Answer, Paging, Params, base, entry_text, searchset
from .query import Condition, SearchError, parse_condition
from .repository import Repository
from .search_params import SEARCH_PARAMETERS

VALIDATE_MODES = ("create", "update", "delete")


class _DryRun(Exception):
    """Raised at the end of a dry run so that its transaction rolls back."""


def _dry_run(action: Callable[[], Any]) -> None:
    """Run a write as the request would, then roll it back: ``$validate`` with a ``mode`` answers
    what that write would answer (validation, policy, versions) by being that write, undone."""
    try:
        with transaction.atomic():
            action()
            raise _DryRun
    except _DryRun:
        pass


def _validate_input(body: Any, params: Params) -> tuple[Any, str | None]:
    """The resource and ``mode`` of a ``$validate`` call: a resource body or a ``Parameters``
    (``resource``, ``mode``), the mode also from the query."""
    mode = next((values[-1] for key, values in params if key == "mode"), None)
    resource = body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        resource = None
        for parameter in body.get("parameter") or []:
            if not isinstance(parameter, dict):
                raise InvalidResource("Parameters.parameter must hold objects", expression="Parameters.parameter")
            if parameter.get("name") == "resource":
                resource = parameter.get("resource")
            elif parameter.get("name") == "mode":
                mode = parameter.get("valueCode")
    if mode is not None and mode not in VALIDATE_MODES:
        raise InvalidResource(f"Unsupported $validate mode {mode!r} (create, update or delete)", expression="mode")
    return resource, mode


def validate(repo: Repository, resource_type: str, resource_id: str | None, body: Any, params: Params) -> Answer:
    """``POST [type]/$validate`` and ``POST [type]/[id]/$validate`` (FHIR R4 resource-operation-validate).

    Without a ``mode``: the resource is checked as any write would check it (nothing else is
    decided). With ``mode`` create, update or delete: the write itself runs and is rolled back, so
    the answer is that write's, access policy included (403, 404, 412 as it would be).
    200 All OK when valid; otherwise the OperationOutcome the write would give, with its status.
    """
    resource, mode = _validate_input(body, params)
    if mode == "delete":
        if resource_id is None:
            raise InvalidResource("$validate with mode delete needs the instance: [type]/[id]/$validate",
                                  expression="mode")
        _dry_run(lambda: repo.delete(resource_type, resource_id))
        return Answer(200, body=ALL_OK)
    if resource is None:
        raise InvalidResource("$validate needs a resource (the body, or a Parameters 'resource')")
    if mode == "update":
        target = resource_id or (resource.get("id") if isinstance(resource, dict) else None)
        if not isinstance(target, str):
            raise InvalidResource("$validate with mode update needs the resource's id", expression="mode")
        _dry_run(lambda: repo.update(resource_type, target, resource))
    elif mode == "create":
        _dry_run(lambda: repo.create(resource_type, resource))
    else:
        repo.validate(resource_type, resource)
    return Answer(200, body=ALL_OK)


def everything(repo: Repository, patient_id: str, params: Params) -> Answer:
    """``GET Patient/[id]/$everything``: the Patient and its compartment as a searchset Bundle.

    ``_type`` (comma-separated) narrows the types, ``_since`` keeps what changed at or after an
    instant, ``_count``/``_offset`` page. Each type is filtered by the caller's own search decision
    (access policy ∩ SMART scopes: a patient's token gets its own compartment only), types it may
    not search are left out, and a Patient it may not read is 404.
    """
    types = sorted(SEARCH_PARAMETERS)
    conditions: list[Condition] = []
    kept: list[tuple[str, str]] = []
    paging = Paging()
    for key, values in params:
        value = values[-1]
        if paging.take(key, value):
            continue
        if key == "_type":
            wanted = [name.strip() for raw in values for name in raw.split(",") if name.strip()]
            unknown = [name for name in wanted if name not in SEARCH_PARAMETERS]
            if unknown or not wanted:
                raise InvalidResource(f"Unknown _type {', '.join(unknown) or value!r}", expression="_type")
            types = sorted(set(wanted))
            kept.append((key, ",".join(types)))
        elif key == "_since":
            try:
                conditions.append(parse_condition("Patient", "_lastUpdated", f"ge{value}"))
            except SearchError:
                raise InvalidResource(f"_since must be a FHIR instant, not {value!r}", expression="_since") from None
            kept.append((key, value))
        elif key not in IGNORED_PARAMS:
            raise InvalidResource(f"Unsupported parameter {key!r} for $everything", expression=key)
    offset, count = paging.offset(), paging.count
    page = repo.everything(patient_id, types, conditions, offset=offset, count=count)
    links = paging.links(f"{base()}/Patient/{patient_id}/$everything", kept, offset,
                         more=offset + count < page.total, total_only=False)
    head = {"resourceType": "Bundle", "type": "searchset", "total": page.total, "link": links}
    return Answer(200, text=searchset(head, [entry_text(repo, row, "match") for row in page.rows]))
