"""Password reset and change: the one write path for a user's password, and reset links.

A reset link is ``<ISSUER>/oauth2/setpassword/<id>/<secret>``, Medplum's id + secret shape, made
with Django's password-reset token generator under a salt of its own (an invitation link of the
Project Admin pages cannot be used here, nor the other way round): ``id`` is the user's primary
key in URL-safe base64 and ``secret`` is bound to the password hash and last sign-in, so the link
stops working once a password is set (single use) and after ``PASSWORD_RESET_LIFETIME`` seconds.
Nothing is stored. Links are built from ``ISSUER``, never from the request's ``Host`` header.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import base36_to_int, urlsafe_base64_decode, urlsafe_base64_encode
from django.views.decorators.debug import sensitive_variables

from . import audit, revocation, throttle
from .conf import auth_settings
from .models import Login, ProjectMembership

log = logging.getLogger("medplum_auth.audit")

# Django's token timestamps count seconds from this naive local time (django.contrib.auth.tokens).
_TOKEN_EPOCH = datetime(2001, 1, 1)


def _seconds_now() -> int:
    return int((datetime.now() - _TOKEN_EPOCH).total_seconds())


class ResetTokenGenerator(PasswordResetTokenGenerator):
    """Django's generator with its own salt and ``PASSWORD_RESET_LIFETIME``.

    Django's own ``PASSWORD_RESET_TIMEOUT`` (3 days, used by invitation links) still applies too:
    the shorter of the two wins.
    """

    key_salt = "medplum_auth.passwords.ResetTokenGenerator"

    def check_token(self, user: Any, token: str | None) -> bool:
        if not isinstance(token, str) or not super().check_token(user, token):
            return False
        issued = base36_to_int(token.split("-")[0])  # checked by super(): "<base36 time>-<hmac>"
        return _seconds_now() - issued <= int(auth_settings.PASSWORD_RESET_LIFETIME)


reset_token_generator = ResetTokenGenerator()


def user_for_id(link_id: Any) -> Any | None:
    """The user a link's ``id`` names, or ``None`` for anything else (never an exception)."""
    if not isinstance(link_id, str) or not link_id or len(link_id) > 200:
        return None
    User = get_user_model()
    try:
        pk = User._meta.pk.to_python(urlsafe_base64_decode(link_id).decode())
        return User._default_manager.get(pk=pk)
    except (TypeError, ValueError, OverflowError, UnicodeDecodeError, ValidationError, User.DoesNotExist):
        return None


def check_link(link_id: Any, secret: Any) -> Any | None:
    """The user of a valid, unexpired, unused reset link; ``None`` otherwise (one answer for all)."""
    user = user_for_id(link_id)
    if user is None or not user.is_active or not reset_token_generator.check_token(user, secret):
        return None
    return user


@sensitive_variables("token")
def reset_url(user: Any) -> str:
    link_id = urlsafe_base64_encode(force_bytes(user.pk))
    token = reset_token_generator.make_token(user)
    path = reverse("medplum_auth:set-password", args=[link_id, token])
    return f"{auth_settings.ISSUER.rstrip('/')}{path}"


def reset_counters(email: str, remote_addr: str | None) -> list[throttle.Counter]:
    """Every reset request counts (the answer never says whether the email is known): per email
    address, so a mailbox cannot be flooded, and per client address."""
    window = int(auth_settings.PASSWORD_RESET_WINDOW)
    return [
        throttle.Counter("password-reset-email", (email.strip().lower(),),
                         int(auth_settings.PASSWORD_RESET_MAX_REQUESTS), window),
        throttle.Counter("password-reset-ip", (remote_addr or "-",),
                         int(auth_settings.PASSWORD_RESET_IP_MAX_REQUESTS), window),
    ]


def _record(event_type: str, user: Any, request: Any = None, **kwargs: Any) -> None:
    """One event per project the user belongs to, so each project's admins see it."""
    projects = list(ProjectMembership.objects.filter(user=user).values_list("project_id", flat=True).distinct())
    for project in projects or [None]:
        audit.record(event_type, request=request, project=project, user=user, subject=f"User/{user.pk}",
                     subject_display=getattr(user, "email", ""), **kwargs)


def request_reset(email: str, request: Any = None) -> Callable[[], None]:
    """Look the email up now; return the delivery step to run once the answer has been sent.

    The caller answers the same way whatever this finds, and runs the returned step after the
    response is written (``HttpResponse.close``), so neither the answer nor its timing says
    whether the email is known: before the answer, a known and an unknown email cost the same one
    query. A user must be active, have a usable password and be the only one with that email
    (as at sign-in).
    """
    email = (email or "").strip()
    User = get_user_model()
    users = list(User._default_manager.filter(email__iexact=email)[:2]) if "\x00" not in email else []
    user = users[0] if len(users) == 1 and users[0].is_active and users[0].has_usable_password() else None

    def deliver() -> None:
        if user is None:
            # Recorded after the answer too: an unknown email costs the same before it.
            audit.record(audit.EventType.PASSWORD_RESET_REQUESTED, request=request, client=None, user=None,
                         actor_display="", subject_display=email.lower()[:255], outcome=audit.Outcome.MINOR_FAILURE,
                         reason=audit.INVALID_CREDENTIALS, operator_reason="unknown_email",
                         message="password reset requested for an unknown or unusable email")
            return
        context = {"user": user, "url": reset_url(user), "issuer": auth_settings.ISSUER,
                   "lifetime_minutes": int(auth_settings.PASSWORD_RESET_LIFETIME) // 60}
        subject = " ".join(render_to_string("medplum_auth/email/password_reset_subject.txt", context).split())
        body = render_to_string("medplum_auth/email/password_reset.txt", context)
        try:
            send_mail(subject, body, None, [getattr(user, user.get_email_field_name())])
        except Exception:  # the answer is already sent: log, never raise into the server
            log.exception("password reset email failed user=%s", user.pk)
            return
        _record(audit.EventType.PASSWORD_RESET_REQUESTED, user, request,
                message=f"password reset link sent user={user.pk}")

    return deliver


@sensitive_variables("password")
def set_password(user: Any, password: str, *, reason: str, keep_login: Login | None = None) -> int:
    """Set ``user``'s password and revoke every login of theirs but ``keep_login``; return how many.

    Tokens of the revoked logins (refresh tokens included) stop working at once. Django sessions
    of the user end on their next request: the session's auth hash no longer matches
    (``django.contrib.auth.get_user``). The caller validates the password first.
    """
    user.set_password(password)
    user.save(update_fields=["password"])
    logins = Login.objects.filter(user=user)
    if keep_login is not None:
        logins = logins.exclude(pk=keep_login.pk)
    count, _now = revocation.revoke(logins, reason)
    _record(audit.EventType.PASSWORD_RESET_COMPLETED, user, detail={"reason": reason, "logins_revoked": count},
            message=f"password set user={user.pk} reason={reason} logins_revoked={count}")
    return count
