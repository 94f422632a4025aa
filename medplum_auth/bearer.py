"""Resolving ``Authorization: Bearer`` access tokens: one signature check and one indexed lookup.

The login lookup is what makes revocation immediate: logout, code replay and refresh-token
reuse all set ``Login.revoked_at``, and every token of that login stops working at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest

from . import tokens
from .models import ClientApplication, Login
from .queries import CompiledLookup


class BearerError(Exception):
    """RFC 6750 §3.1 error: ``invalid_request`` (no/malformed token) or ``invalid_token``."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class AccessContext:
    claims: dict[str, Any]
    login: Login

    @property
    def scopes(self) -> list[str]:
        return str(self.claims.get("scope", "")).split()


def token_from_request(request: HttpRequest, allow_body: bool = False) -> str | None:
    """The Bearer token from the header (RFC 6750 §2.1) or, where allowed, a form body (§2.2)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        return value.strip()
    if allow_body and request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        return request.POST.get("access_token") or None
    return None


def authenticate(token: str) -> AccessContext:
    """Verify an access token and its login; raise :class:`BearerError` otherwise."""
    try:
        claims = tokens.verify_access_token(token)
    except tokens.InvalidToken as exc:
        raise BearerError("invalid_token", "The access token is invalid or expired.") from exc
    login = _bearer_lookup.get(claims["login_id"])
    return AccessContext(claims=claims, login=check_login(login))


@cache
def _bearer_fields() -> tuple[str, ...]:
    user_model = get_user_model()
    user_fields = {"is_active", "is_superuser", "email", "first_name", "last_name", user_model.USERNAME_FIELD}
    present = {field.name for field in user_model._meta.concrete_fields}
    return (
        "id", "user", "client", "project", "membership", "launch", "scope", "auth_method", "auth_time",
        "revoked_at", "refresh_expires_at", "launch_patient", "launch_encounter", "resource_scopes_withheld",
        *(f"user__{name}" for name in sorted(user_fields & present)),
        "project__active", "project__name",
        "client__client_id", "client__name", "client__status", "client__project", "client__access_policy",
        "client__access_policy__resources", "client__access_policy__project",
        "membership__active", "membership__admin", "membership__profile_type", "membership__profile_id",
        "membership__profile_display", "membership__access_parameters", "membership__access_policy",
        "membership__project", "membership__user",
        "membership__access_policy__resources", "membership__access_policy__project",
    )


def bearer_logins() -> QuerySet[Login]:
    """Logins with what a Bearer request reads in the same query: the revocation and enabled
    checks, the user's claims, the profile and both access policies.

    Only those columns: compiling the full seven-table select (well over a hundred columns) cost
    more CPU than everything else in a FHIR read. Other fields still load, lazily, if read.
    """
    return Login.objects.select_related(
        "user", "membership__access_policy", "project", "client__access_policy").only(*_bearer_fields())


def check_login(login: Login | None) -> Login:
    """``login`` if its tokens are usable now (not revoked, client and project enabled, profile
    and user active), else :class:`BearerError`. Shared by the API and introspection."""
    if login is None or login.revoked_at is not None:
        raise BearerError("invalid_token", "The access token has been revoked.")
    if not login.project.active or login.client.status != ClientApplication.Status.ACTIVE:
        raise BearerError("invalid_token", "The client or project is disabled.")
    if login.membership_id and not login.membership.active:
        raise BearerError("invalid_token", "The profile is not active.")
    if login.user_id and not login.user.is_active:
        raise BearerError("invalid_token", "The user is not active.")
    return login


_bearer_lookup = CompiledLookup(Login, bearer_logins)
