"""Resolving ``Authorization: Bearer`` access tokens: one signature check and one indexed lookup.

The login lookup is what makes revocation immediate: logout, code replay and refresh-token
reuse all set ``Login.revoked_at``, and every token of that login stops working at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from . import lookups, tokens
from .lookups import BearerLogin
from .models import ClientApplication, Login


class BearerError(Exception):
    """RFC 6750 §3.1 error: ``invalid_request`` (no/malformed token) or ``invalid_token``."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class AccessContext:
    """A verified access token: its claims and its login as read on this request (frozen values;
    ``login.load()`` gives the model)."""

    claims: dict[str, Any]
    login: BearerLogin

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
    login = lookups.bearer_login(claims["login_id"])
    return AccessContext(claims=claims, login=check_login(login))


def check_login(login: Login | BearerLogin | None) -> Any:
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

