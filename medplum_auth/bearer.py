"""Resolving ``Authorization: Bearer`` access tokens: one signature check and one indexed lookup.

The login lookup is what makes revocation immediate: logout, code replay and refresh-token
reuse all set ``Login.revoked_at``, and every token of that login stops working at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

from . import dpop, lookups, tokens
from .lookups import BearerLogin
from .models import ClientApplication, Login


class BearerError(Exception):
    """RFC 6750 §3.1 error: ``invalid_request`` (no/malformed token) or ``invalid_token``; for a
    DPoP request (``scheme`` "DPoP", RFC 9449 §7.1) also ``invalid_dpop_proof`` and ``use_dpop_nonce``."""

    def __init__(self, error: str, description: str, scheme: str = "Bearer", nonce: str | None = None):
        super().__init__(description)
        self.error = error
        self.description = description
        self.scheme = scheme
        self.nonce = nonce

    def challenge(self, realm: str) -> str:
        """The ``WWW-Authenticate`` value (no error code when no token was sent, RFC 6750 §3.1)."""
        value = f'DPoP algs="{" ".join(dpop.ALGORITHMS)}"' if self.scheme == "DPoP" else f'Bearer realm="{realm}"'
        if self.error != "invalid_request" or self.scheme == "DPoP":
            description = self.description.replace('"', "'")
            value += f', error="{self.error}", error_description="{description}"'
        return value


@dataclass(frozen=True)
class AccessContext:
    """A verified access token: its claims and its login as read on this request (frozen values;
    ``login.load()`` gives the model)."""

    claims: dict[str, Any]
    login: BearerLogin

    @property
    def scopes(self) -> list[str]:
        return str(self.claims.get("scope", "")).split()


def credentials(request: HttpRequest, allow_body: bool = False) -> tuple[str, str] | None:
    """``(scheme, token)`` from ``Authorization: Bearer`` (RFC 6750 §2.1) or ``DPoP`` (RFC 9449
    §7.1), or, where allowed, a form body's ``access_token`` (RFC 6750 §2.2, Bearer only)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme not in ("bearer", "dpop") or not value.strip():
            return None
        return ("DPoP" if scheme == "dpop" else "Bearer"), value.strip()
    if allow_body and request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        token = request.POST.get("access_token")
        return ("Bearer", token) if token else None
    return None


def token_from_request(request: HttpRequest, allow_body: bool = False) -> str | None:
    """The access token of the request, whatever its scheme (see :func:`credentials`)."""
    found = credentials(request, allow_body=allow_body)
    return found[1] if found else None


def authenticate(token: str, *, scheme: str = "Bearer", request: HttpRequest | None = None) -> AccessContext:
    """Verify an access token and its login; raise :class:`BearerError` otherwise.

    A DPoP-bound token (``cnf.jkt``, RFC 9449 §6.1) must come as ``Authorization: DPoP`` with a
    proof for this ``request`` signed by its key (§7.1); sent as Bearer it is refused (§7.2),
    as is an unbound token sent as DPoP.
    """
    try:
        claims = tokens.verify_access_token(token)
    except tokens.InvalidToken as exc:
        raise BearerError("invalid_token", "The access token is invalid or expired.", scheme) from exc
    confirmation = claims.get("cnf")
    jkt = confirmation.get("jkt") if isinstance(confirmation, dict) else None
    if jkt or scheme == "DPoP":
        check_proof(token, jkt, scheme, request)
    login = lookups.bearer_login(claims["login_id"])
    try:
        return AccessContext(claims=claims, login=check_login(login))
    except BearerError as exc:
        exc.scheme = scheme
        raise


def check_proof(token: str, jkt: str | None, scheme: str, request: HttpRequest | None) -> None:
    """RFC 9449 §7: the request's proof is for it, for this token (``ath``) and by the bound key."""
    if not jkt:
        raise BearerError("invalid_token", "The access token is not DPoP-bound: send it as Bearer.", "DPoP")
    if scheme != "DPoP":
        raise BearerError("invalid_token", "The access token is DPoP-bound: send it as 'Authorization: DPoP' "
                          "with a DPoP proof.", "DPoP")
    if request is None:
        raise BearerError("invalid_dpop_proof", "A DPoP proof is required.", "DPoP")
    try:
        proof = dpop.verify(request.META.get("HTTP_DPOP"), method=request.method or "GET",
                            uris=dpop.request_uris(request), access_token=token)
    except dpop.DPoPError as exc:
        raise BearerError(exc.error, exc.description, "DPoP", nonce=exc.nonce) from exc
    if proof.jkt != jkt:
        raise BearerError("invalid_dpop_proof", "The DPoP proof is not signed by the key the token is bound to.",
                          "DPoP")


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

