"""Email + password authentication with a uniform error and failure throttling, and signing the
user in to the session (at once, or after the second factor: :func:`begin_second_factor`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth import login as django_login
from django.contrib.auth import logout as django_logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from . import throttle
from .authorization import AMR_KEY, AUTH_TIME_KEY
from .conf import auth_settings
from .models import Project

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


#: The session's sign-in that passed the password and waits for its second factor (``/oauth2/mfa``).
STATE_KEY = "medplum_auth_mfa"
STATE_SECONDS = 600


def establish_session(request: HttpRequest, user: Any, amr: str) -> None:
    """Sign ``user`` in to the session, recording when and how (``amr``)."""
    django_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    request.session[AUTH_TIME_KEY] = time.time()
    request.session[AMR_KEY] = amr


def begin_second_factor(request: HttpRequest, user: Any, next_url: str, *, label: str = "",
                        project: Project | None = None, keep: Callable[[], None] | None = None) -> HttpResponse:
    """The password was right and a second factor is due: park that and ask for it.

    Another user signed in to this session is signed out first (their session must not carry
    the sign-in on); ``keep`` then puts back what the caller needs kept (a pending authorization).
    """
    if request.user.is_authenticated and request.user.pk != user.pk:
        django_logout(request)
    if keep is not None:
        keep()
    request.session[STATE_KEY] = {"user": str(user.pk), "next": next_url, "label": label,
                                  "project": str(project.pk) if project is not None else "", "at": time.time()}
    return HttpResponseRedirect(reverse("medplum_auth:mfa"))
