"""Email + password authentication with a uniform error and failure throttling."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from . import throttle
from .conf import auth_settings

INVALID = "Email or password is invalid"
THROTTLED = "Too many failed sign-in attempts. Try again later."


def _counter(email: str, remote_addr: str | None) -> throttle.Counter:
    """Per email and client address: a flood from one address cannot lock an account out everywhere."""
    return throttle.Counter("signin-failures", (email.lower(), remote_addr or "-"),
                            int(auth_settings.SIGNIN_MAX_FAILURES), int(auth_settings.SIGNIN_FAILURE_WINDOW))


def retry_after(email: str, remote_addr: str | None) -> int | None:
    """Seconds until sign-in for this email from this address is allowed again, or ``None``."""
    return throttle.retry_after([_counter(email, remote_addr)])


def is_throttled(email: str, remote_addr: str | None) -> bool:
    return retry_after(email, remote_addr) is not None


def record_failure(email: str, remote_addr: str | None) -> None:
    throttle.record_failure([_counter(email, remote_addr)])


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
        throttle.clear([_counter(email, remote_addr)])
        return user, None
    record_failure(email, remote_addr)
    return None, INVALID
