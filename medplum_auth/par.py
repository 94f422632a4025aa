"""Pushed authorization requests (RFC 9126): a client sends its authorization request's
parameters to ``/oauth2/par`` itself, authenticated, and the browser carries only a reference.

The reference is ``urn:ietf:params:oauth:request_uri:`` plus 256 random bits; only the SHA-256 of
the random part is stored. It is bound to the client that pushed it, expires after
``PAR_LIFETIME`` seconds and is used once (RFC 9126 §4: taken by a conditional DELETE, so two
concurrent uses cannot both succeed).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.utils import timezone

from .conf import auth_settings
from .models import ClientApplication, PushedAuthorizationRequest

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
#: Client authentication parameters: they authenticate the push and are not part of the request.
AUTHENTICATION_PARAMETERS = frozenset({"client_secret", "client_assertion", "client_assertion_type"})


def _digest(reference: str) -> str:
    return hashlib.sha256(reference.encode()).hexdigest()


def push(client: ClientApplication, parameters: dict[str, str]) -> tuple[str, int]:
    """Store validated ``parameters`` for ``client``; return ``(request_uri, expires_in)``."""
    lifetime = int(auth_settings.PAR_LIFETIME)
    reference = secrets.token_urlsafe(32)
    PushedAuthorizationRequest.objects.create(
        digest=_digest(reference), client=client, parameters=parameters,
        expires_at=timezone.now() + timedelta(seconds=lifetime))
    return REQUEST_URI_PREFIX + reference, lifetime


def take(client_id: str, request_uri: str) -> dict[str, Any] | None:
    """The pushed parameters, once: ``None`` if unknown, expired, used, or pushed by another client."""
    if not request_uri.startswith(REQUEST_URI_PREFIX) or len(request_uri) > 200 or not client_id:
        return None
    digest = _digest(request_uri[len(REQUEST_URI_PREFIX):])
    row = (PushedAuthorizationRequest.objects.filter(digest=digest)
           .values("pk", "parameters", "expires_at", "client__client_id").first())
    if row is None:
        return None
    deleted, _ = PushedAuthorizationRequest.objects.filter(pk=row["pk"]).delete()
    if not deleted or row["expires_at"] <= timezone.now():
        return None
    if not secrets.compare_digest(row["client__client_id"].encode(), client_id.encode()):
        return None
    return row["parameters"]


def required(client: ClientApplication | None) -> bool:
    """Whether ``client`` may start the code flow only through ``/oauth2/par``."""
    if auth_settings.REQUIRE_PUSHED_AUTHORIZATION_REQUESTS:
        return True
    return bool(client is not None and client.require_pushed_authorization_requests)
