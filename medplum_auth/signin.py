"""Email + password authentication with a uniform error and failure throttling."""

from __future__ import annotations

import hashlib
from typing import Any

from django.contrib.auth import get_user_model
from django.core.cache import cache

from .conf import auth_settings

INVALID = "Email or password is invalid"
THROTTLED = "Too many failed sign-in attempts. Try again later."


def _throttle_key(email: str, remote_addr: str | None) -> str:
    """A cache key safe for every backend (memcached refuses long keys and control characters)."""
    digest = hashlib.sha256(f"{email.lower()}\n{remote_addr or '-'}".encode()).hexdigest()
    return f"medplum_auth:signin-failures:{digest}"


def is_throttled(email: str, remote_addr: str | None) -> bool:
    return cache.get(_throttle_key(email, remote_addr), 0) >= int(auth_settings.SIGNIN_MAX_FAILURES)


def authenticate_email(email: str, password: str, remote_addr: str | None = None) -> tuple[Any | None, str | None]:
    """Return ``(user, None)`` or ``(None, message)``; unknown email and wrong password look alike."""
    email = (email or "").strip()
    if is_throttled(email, remote_addr):
        return None, THROTTLED
    User = get_user_model()
    # No stored email holds NUL (PostgreSQL text cannot): such an email is simply unknown.
    users = list(User._default_manager.filter(email__iexact=email)[:2]) if email and "\x00" not in email else []
    user = users[0] if len(users) == 1 else None
    if user is None:
        User().set_password(password or "")  # same hashing cost as a real check (Django's ModelBackend does this)
    elif user.check_password(password or "") and user.is_active:
        cache.delete(_throttle_key(email, remote_addr))
        return user, None
    key = _throttle_key(email, remote_addr)
    cache.add(key, 0, int(auth_settings.SIGNIN_FAILURE_WINDOW))
    try:
        cache.incr(key)
    except ValueError:
        cache.set(key, 1, int(auth_settings.SIGNIN_FAILURE_WINDOW))
    return None, INVALID
