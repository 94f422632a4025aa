"""Scope parsing: OpenID Connect scopes and SMART App Launch v1/v2 resource scopes.

SMART 2.2 §3: ``(patient|user|system)/(Type|*).(permissions)[?param=value…]`` where the v1
permissions are ``read``/``write``/``*`` and the v2 permissions are the letters ``c r u d s``
in that order (at least one). v1 maps to v2: ``read`` → ``rs``, ``write`` → ``cud``, ``*`` → ``cruds``.
Anything that does not parse exactly is not a resource scope and grants nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

OIDC_SCOPES: dict[str, str] = {
    "openid": "Confirm your identity",
    "profile": "Read your name and basic profile",
    "email": "Read your email address",
    "phone": "Read your phone number",
    "address": "Read your postal address",
    "fhirUser": "Know which FHIR profile you signed in as",
    "offline_access": "Stay connected when you are not using the app",
    "offline": "Stay connected when you are not using the app",
    "online_access": "Stay connected while you are signed in",
    "launch": "Receive the patient or encounter it was launched with",
    "launch/patient": "Ask which patient to use",
    "launch/encounter": "Ask which encounter to use",
}
OFFLINE_SCOPES = frozenset({"offline_access", "offline"})

_SMART_RE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{1,63})\."
    r"(?P<perm>read|write|\*|c?r?u?d?s?)(?:\?(?P<query>[^\s?#]+))?\Z"
)
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


@dataclass(frozen=True)
class ResourceScope:
    """A parsed SMART resource scope."""

    context: str  # patient | user | system
    resource_type: str  # a FHIR type or "*"
    permissions: str  # subset of "cruds", in order
    criteria: tuple[tuple[str, str], ...] = ()
    version: int = 2

    def describe(self) -> str:
        verbs = ", ".join(_VERBS[p] for p in self.permissions)
        what = "all data" if self.resource_type == "*" else f"{self.resource_type} records"
        whose = {"patient": "for the selected patient", "user": "you can access",
                 "system": "in the project"}[self.context]
        where = "".join(f" where {k} = {v}" for k, v in self.criteria)
        return f"{verbs.capitalize()} {what} {whose}{where}"


def split(scope: str | None) -> list[str]:
    """Scope string → ordered unique list (RFC 6749 §3.3: space-delimited, case-sensitive)."""
    return list(dict.fromkeys((scope or "").split()))


def parse_resource_scope(scope: str) -> ResourceScope | None:
    """The parsed scope, or ``None`` when ``scope`` is not a well-formed SMART resource scope."""
    match = _SMART_RE.match(scope)
    if not match:
        return None
    perm = match.group("perm")
    if not perm:
        return None
    version = 1 if perm in _V1 else 2
    permissions = _V1.get(perm, perm)
    criteria: tuple[tuple[str, str], ...] = ()
    if match.group("query"):
        if version == 1:
            return None  # v1 scopes have no constraints
        try:
            pairs = parse_qsl(match.group("query"), keep_blank_values=False, strict_parsing=True)
        except ValueError:
            return None
        if not pairs:
            return None
        criteria = tuple(pairs)
    return ResourceScope(match.group("context"), match.group("type"), permissions, criteria, version)


def is_supported(scope: str) -> bool:
    return scope in OIDC_SCOPES or parse_resource_scope(scope) is not None


def describe(scope: str) -> str:
    """Plain words for the consent page."""
    if scope in OIDC_SCOPES:
        return OIDC_SCOPES[scope]
    parsed = parse_resource_scope(scope)
    return parsed.describe() if parsed else scope


def wants_refresh_token(scopes: list[str]) -> bool:
    return any(s in OFFLINE_SCOPES for s in scopes)
