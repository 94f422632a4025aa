"""``AuditEvent``: the security events of :mod:`medplum_auth.audit` as read-only FHIR R4 resources.

They are not stored resources: each is built from a :class:`~medplum_auth.models.SecurityEvent`
row when read. Search runs on that table's columns (indexed per project), never on JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q, QuerySet

from medplum_auth.conf import auth_settings
from medplum_auth.models import SecurityEvent, SecurityEventType

from .query import DATE_PREFIXES, SearchError
from .repository import format_instant
from .search_params import date_range

RESOURCE_TYPE = "AuditEvent"
#: Our event codes, as ``AuditEvent.subtype``.
SUBTYPE_SYSTEM = "https://github.com/medplum-django/django-medplum-auth/security-event"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
OUTCOME_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-event-outcome"

USER_AUTHENTICATION = ("110114", "User Authentication")
SECURITY_ALERT = ("110113", "Security Alert")
ROLES_CHANGED = ("110136", "Security Roles Changed")
APPLICATION_ACTIVITY = ("110100", "Application Activity")

_ROLE_PREFIXES = ("membership.", "access_policy.")
_AUTH_PREFIXES = ("signin.", "mfa.", "password_reset.", "authorization.", "token.")


def event_category(event_type: str) -> tuple[str, str]:
    """``AuditEvent.type`` (a DICOM code) of one of our event codes."""
    if event_type == SecurityEventType.REFRESH_TOKEN_REUSE:
        return SECURITY_ALERT
    if event_type.startswith(_AUTH_PREFIXES):
        return USER_AUTHENTICATION
    if event_type.startswith(_ROLE_PREFIXES):
        return ROLES_CHANGED
    return APPLICATION_ACTIVITY


def _action(event_type: str) -> str:
    verb = event_type.rsplit(".", 1)[-1]
    if verb in ("created", "invited"):
        return "C"
    if verb in ("updated", "changed", "secret_rotated", "default_changed", "rotated"):
        return "U"
    if verb in ("deleted", "removed", "retired", "secret_retired"):
        return "D"
    return "E"


SEARCH_PARAMS = {"_id": "token", "date": "date", "type": "token", "subtype": "token", "agent": "reference",
                 "entity": "reference", "outcome": "token"}


def to_fhir(event: SecurityEvent) -> dict[str, Any]:
    """The R4 ``AuditEvent`` of one row."""
    category = event_category(event.event_type)
    recorded = format_instant(event.recorded)
    resource: dict[str, Any] = {
        "resourceType": RESOURCE_TYPE,
        "id": str(event.pk),
        "meta": {"versionId": "1", "lastUpdated": recorded},
        "type": {"system": DCM, "code": category[0], "display": category[1]},
        "subtype": [{"system": SUBTYPE_SYSTEM, "code": event.event_type,
                     "display": str(SecurityEventType(event.event_type).label)
                     if event.event_type in SecurityEventType.values else event.event_type}],
        "action": _action(event.event_type),
        "recorded": recorded,
        "outcome": str(event.outcome),
    }
    if event.reason:
        resource["outcomeDesc"] = event.reason
    resource["agent"] = _agents(event)
    resource["source"] = {
        "site": auth_settings.ISSUER,
        "observer": {"display": "django-medplum-auth"},
        "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4",
                  "display": "Application Server"}],
    }
    entity: dict[str, Any] = {}
    what = _reference(event.subject, event.subject_display)
    if what:
        entity["what"] = what
    details = [{"type": "request-id", "valueString": event.request_id}] if event.request_id else []
    details += [{"type": str(key), "valueString": value if isinstance(value, str) else json.dumps(value)}
                for key, value in sorted((event.detail or {}).items()) if value is not None]
    if details:
        entity["detail"] = details
    if entity:
        resource["entity"] = [entity]
    return resource


def _reference(reference: str, display: str) -> dict[str, str]:
    out = {}
    if reference:
        out["reference"] = reference
    if display:
        out["display"] = display
    return out


def _agents(event: SecurityEvent) -> list[dict[str, Any]]:
    network = {"network": {"address": event.remote_addr, "type": "2"}} if event.remote_addr else {}
    agents: list[dict[str, Any]] = []
    person = event.actor_profile or (f"User/{event.actor_user}" if event.actor_user else "")
    # A user; for a failed sign-in only the email typed; with neither user nor client, the system.
    if person or not event.actor_client or event.event_type == SecurityEventType.SIGNIN_FAILED:
        agent: dict[str, Any] = {
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                                 "code": "humanuser", "display": "human user"}]},
            "who": _reference(person, event.actor_display) or {"display": "system"},
            "requestor": True,
        }
        if event.actor_user:
            agent["altId"] = event.actor_user
        if event.user_agent:
            agent["name"] = event.user_agent
        agents.append({**agent, **network})
    if event.actor_client:
        alone = not agents
        application: dict[str, Any] = {
            "type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
            "who": _reference(f"ClientApplication/{event.actor_client}",
                              event.actor_display if alone else ""),
            "requestor": alone,
        }
        if alone and event.user_agent:
            application["name"] = event.user_agent
        agents.append({**application, **network} if alone else application)
    return agents


@dataclass
class AuditSearch:
    """Parsed search parameters (FHIR R4 AuditEvent search)."""

    filters: list[Q] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)
    ascending: bool = False


def _token(value: str, param: str) -> tuple[str | None, str]:
    system, bar, code = value.partition("|")
    if not bar:
        return None, value
    return system, code


def _values(raw: str, param: str) -> list[str]:
    values = [v for v in raw.split(",") if v]
    if not values or any(len(v) > 255 or any(ord(c) < 32 for c in v) for v in values):
        raise SearchError(f"Invalid value for {param!r}", param)
    return values


def _date_filter(raw: str) -> Q:
    prefix = raw[:2] if raw[:2] in DATE_PREFIXES else "eq"
    text = raw[2:] if raw[:2] in DATE_PREFIXES else raw
    bounds = date_range(text) if len(text) <= 64 else None
    if bounds is None:
        raise SearchError(f"Invalid date {raw!r} for 'date'", "date")
    low, high = bounds
    return {
        "eq": Q(recorded__gte=low, recorded__lt=high),
        "ne": Q(recorded__lt=low) | Q(recorded__gte=high),
        "ge": Q(recorded__gte=low),
        "gt": Q(recorded__gte=high),
        "le": Q(recorded__lt=high),
        "lt": Q(recorded__lt=low),
    }[prefix]


def _types_of_category(code: str) -> list[str]:
    return [t for t in SecurityEventType.values if event_category(t)[0] == code]


def _agent_filter(value: str) -> Q:
    kind, slash, ident = value.rpartition("/")
    if not slash:
        ident = value
        return (Q(actor_user=ident) | Q(actor_membership=ident) | Q(actor_client=ident)
                | Q(actor_profile__endswith=f"/{ident}"))
    if kind == "User":
        return Q(actor_user=ident)
    if kind == "ProjectMembership":
        return Q(actor_membership=ident)
    if kind == "ClientApplication":
        return Q(actor_client=ident)
    return Q(actor_profile=value)


def parse(key: str, raw: str, search: AuditSearch) -> None:
    """Add one query parameter's filter; :class:`SearchError` for what is not supported."""
    name, colon, modifier = key.partition(":")
    if name not in SEARCH_PARAMS:
        raise SearchError(f"Unknown search parameter {key!r} for AuditEvent", key)
    if colon:
        raise SearchError(f"Unsupported modifier {modifier!r} for {name!r}", key)
    if "\x00" in raw:
        raise SearchError(f"Invalid value for {name!r}", name)
    if name == "date":
        search.filters.append(_date_filter(raw))
        return
    values = _values(raw, name)
    q = Q(pk__in=[])
    for value in values:
        if name == "_id":
            if value.isdigit() and len(value) < 19:
                q |= Q(pk=int(value))
        elif name == "type":
            system, code = _token(value, name)
            if system in (None, "", DCM):
                q |= Q(event_type__in=_types_of_category(code))
        elif name == "subtype":
            system, code = _token(value, name)
            if system in (None, "", SUBTYPE_SYSTEM):
                q |= Q(event_type=code)
        elif name == "outcome":
            system, code = _token(value, name)
            if code not in {str(o) for o in SecurityEvent.Outcome.values}:
                raise SearchError(f"Invalid outcome {value!r} (use 0, 4, 8 or 12)", name)
            if system in (None, "", OUTCOME_SYSTEM):
                q |= Q(outcome=int(code))
        elif name == "agent":
            q |= _agent_filter(value)
        elif name == "entity":
            q |= Q(subject=value)
    search.filters.append(q)


def queryset(project_id: Any, search: AuditSearch, *, system: bool = False) -> QuerySet[SecurityEvent]:
    """The project's events matching ``search``; with ``system`` also those of no project (signing keys)."""
    events = SecurityEvent.objects.filter(Q(project_id=project_id) | Q(project__isnull=True) if system
                                          else Q(project_id=project_id))
    for q in search.filters:
        events = events.filter(q)
    order = ("recorded", "id") if search.ascending else ("-recorded", "-id")
    return events.order_by(*order)


def read(project_id: Any, resource_id: str, *, system: bool = False) -> SecurityEvent | None:
    if not resource_id.isdigit() or len(resource_id) > 18:
        return None
    return queryset(project_id, AuditSearch(), system=system).filter(pk=int(resource_id)).first()
