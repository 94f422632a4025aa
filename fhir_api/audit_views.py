"""``/fhir/R4/AuditEvent``: the project's security events, for its admins only; read and search.

Writes are a 405: the trail is append-only and written only by :func:`medplum_auth.audit.record`.
A token whose membership is not an active project admin gets 403 (as any type its policy does
not allow); events of other projects are never found (404, or absent from searches).
"""

from __future__ import annotations

import json
from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from medplum_auth.bearer import AccessContext
from medplum_auth.contrib.rest_framework.exceptions import InvalidResource, ResourceNotFound
from medplum_auth.contrib.rest_framework.permissions import AccessPolicyPermission

from . import audit_events
from .interactions import IGNORED_PARAMS, Paging
from .interactions import base as _base
from .query import SearchError
from .views import FhirView

#: ``total`` is counted up to this many matches; beyond it, ``total`` is left out (FHIR R4
#: ``Bundle.total`` is optional) and ``next`` links still page on, so a search costs one bounded
#: index scan however many events the project has (bench/audit_bench.py).
TOTAL_LIMIT = 1000


class ProjectAdminPermission(BasePermission):
    """Only an active admin membership of the token's project (not a client, not a member)."""

    message = "Forbidden"

    def has_permission(self, request: Request, view: Any) -> bool:
        context = request.auth
        if not isinstance(context, AccessContext):
            return False
        login = context.login
        return bool(login.membership_id and login.membership.admin and login.membership.active)


class AuditEventView(FhirView):
    permission_classes = [AccessPolicyPermission, ProjectAdminPermission]
    http_method_names = ["get", "post", "put", "patch", "delete", "options", "head"]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super(FhirView, self).initial(request, *args, **kwargs)

    def get_fhir_target(self, request: Request) -> tuple[str, str] | None:
        interaction = self.interactions.get(request.method or "")
        return (audit_events.RESOURCE_TYPE, interaction) if interaction else None

    def project_id(self) -> Any:
        return self.request.auth.login.project_id

    def system(self) -> bool:
        """Superusers also see the events of no project (signing-key rotation)."""
        login = self.request.auth.login
        return bool(login.user_id and login.user.is_superuser)

    @property
    def allowed_methods(self) -> list[str]:
        """The reads only (``Allow`` of every answer): the write handlers are there to answer 405
        after authentication, not because writes are allowed."""
        return ["GET", "HEAD", "OPTIONS"]

    def http_method_not_allowed(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        from rest_framework.exceptions import MethodNotAllowed

        raise MethodNotAllowed(request.method, detail="AuditEvent is read-only: events are written by the server")


class AuditEventTypeView(AuditEventView):
    """``GET /AuditEvent``: a searchset Bundle, newest first by default."""

    interactions = {"GET": "search"}

    def get(self, request: Request) -> Response:
        search = audit_events.AuditSearch()
        paging, summary = Paging(), None
        try:
            for key, values in request.query_params.lists():
                value = values[-1]
                if paging.take(key, value):
                    continue
                if key == "_sort":
                    if value not in ("date", "-date", "_lastUpdated", "-_lastUpdated"):
                        raise InvalidResource(f"Unsupported _sort {value!r} (use date or -date)", expression="_sort")
                    search.ascending = not value.startswith("-")
                    search.kept.append((key, value))
                elif key == "_summary":
                    if value not in ("count", "false"):
                        raise InvalidResource(f"Unsupported _summary {value!r}", expression="_summary")
                    summary = value
                    search.kept.append((key, value))
                elif key in IGNORED_PARAMS:
                    continue
                else:
                    for raw in values:
                        audit_events.parse(key, raw, search)
                        search.kept.append((key, raw))
        except SearchError as exc:
            raise InvalidResource(str(exc), expression=exc.param) from None
        offset, count = paging.offset(), paging.count
        events = audit_events.queryset(self.project_id(), search, system=self.system())
        counted = events.order_by()[:TOTAL_LIMIT + 1].count()
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
        if counted <= TOTAL_LIMIT:
            bundle["total"] = counted
        base = _base()
        rows = [] if summary == "count" or not count else list(events[offset:offset + count + 1])
        more, rows = len(rows) > count, rows[:count]
        bundle["link"] = paging.links(f"{base}/AuditEvent", search.kept, offset,
                                      more=more or offset + count < min(counted, TOTAL_LIMIT),
                                      total_only=summary == "count")
        if summary != "count":
            bundle["entry"] = [{"fullUrl": f"{base}/AuditEvent/{row.pk}", "resource": audit_events.to_fhir(row),
                                "search": {"mode": "match"}} for row in rows]
        return self.json_response(json.dumps(bundle, separators=(",", ":"), ensure_ascii=False))

    post = put = patch = delete = AuditEventView.http_method_not_allowed


class AuditEventInstanceView(AuditEventView):
    """``GET /AuditEvent/<id>``."""

    interactions = {"GET": "read"}

    def get(self, request: Request, resource_id: str) -> Response:
        event = audit_events.read(self.project_id(), resource_id, system=self.system())
        if event is None:
            raise ResourceNotFound(f"AuditEvent/{resource_id} not found")
        return self.json_response(json.dumps(audit_events.to_fhir(event), separators=(",", ":"), ensure_ascii=False),
                                  {"ETag": 'W/"1"'})

    post = put = patch = delete = AuditEventView.http_method_not_allowed
