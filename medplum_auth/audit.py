"""The security audit trail: one write path, :func:`record`, for every :class:`SecurityEvent`.

Each event keeps the time, the project, the actor (a user and their membership, or a client acting
for itself), the subject (``Login/<id>``, ``ClientApplication/<client_id>`` …), the outcome, the
client's address (``REMOTE_ADDR``, or the right-most address of ``TRUSTED_PROXY_HEADER``), its
user agent and the request id that :class:`~medplum_auth.middleware.RequestIdMiddleware` also
sends back as ``X-Request-ID`` and that the ``medplum_auth.audit`` log line repeats.

Callers that run outside the request (the services called from the Project Admin pages, the
Django admin or a management command) need not pass it: the middleware makes the current request
available, and its signed-in user becomes the actor when none is given.

Never pass a secret, token or password in ``detail``: it is stored and shown to project admins.
"""

from __future__ import annotations

import contextvars
import ipaddress
import logging
import re
import uuid
from typing import Any

from django.http import HttpRequest
from django.utils import timezone

from .conf import auth_settings
from .models import SecurityEvent, SecurityEventType

logger = logging.getLogger("medplum_auth.audit")

EventType = SecurityEventType
Outcome = SecurityEvent.Outcome

REQUEST_ID_HEADER = "X-Request-ID"
#: An incoming ``X-Request-ID`` is kept only if it looks like an id (a proxy's or a client's).
REQUEST_ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:\-]{7,63}\Z")

#: The public reason of every failed password check (unknown email, wrong password, inactive
#: user alike), so the log a project admin reads never tells whether an account exists.
INVALID_CREDENTIALS = "invalid_credentials"

_current_request: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar(
    "medplum_auth_request", default=None)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def current_request() -> HttpRequest | None:
    """The request :class:`~medplum_auth.middleware.RequestIdMiddleware` is serving, if any."""
    return _current_request.get()


def bind_request(request: HttpRequest | None) -> contextvars.Token[HttpRequest | None]:
    return _current_request.set(request)


def unbind_request(token: contextvars.Token[HttpRequest | None]) -> None:
    _current_request.reset(token)


def request_id(request: HttpRequest) -> str:
    """The request's id: a valid incoming ``X-Request-ID``, else a new random one (kept on the request)."""
    rid = getattr(request, "request_id", None)
    if rid is None:
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        rid = incoming if isinstance(incoming, str) and REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        request.request_id = rid
    return rid


def _header_key(name: str) -> str:
    key = name.strip().upper().replace("-", "_")
    return key if key.startswith("HTTP_") else f"HTTP_{key}"


def client_address(request: HttpRequest) -> str | None:
    """``REMOTE_ADDR``, unless ``TRUSTED_PROXY_HEADER`` names a header: then its right-most valid
    address (the one the trusted proxy added; anything left of it is what the client claimed)."""
    header = auth_settings.TRUSTED_PROXY_HEADER
    if header:
        value = request.META.get(_header_key(header), "")
        for candidate in reversed(value.split(",")):
            address = _valid_ip(candidate.strip())
            if address:
                return address
    return _valid_ip(request.META.get("REMOTE_ADDR", ""))


def _valid_ip(value: str) -> str | None:
    if not value or len(value) > 64:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _text(value: Any, limit: int) -> str:
    """Storable text: no control characters (PostgreSQL cannot store NUL), at most ``limit`` long."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return _CONTROL.sub("", text)[:limit]


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value, 500)
    if isinstance(value, dict):
        return {_text(k, 64): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value[:100]]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _text(value, 500)


def _session_user(request: HttpRequest) -> Any:
    user = getattr(request, "user", None)
    return user if getattr(user, "is_authenticated", False) and getattr(user, "pk", None) is not None else None


def record(
    event_type: str,
    *,
    request: HttpRequest | None = None,
    project: Any = None,
    user: Any = None,
    membership: Any = None,
    client: Any = None,
    subject: str = "",
    subject_display: str = "",
    outcome: int = Outcome.SUCCESS,
    reason: str = "",
    operator_reason: str = "",
    actor_display: str | None = None,
    detail: dict[str, Any] | None = None,
    message: str | None = None,
) -> SecurityEvent:
    """Store one security event and write its ``medplum_auth.audit`` log line.

    ``user``/``membership`` are the person acting (the membership's user when ``user`` is not
    given), ``client`` the application involved (the actor itself when there is no user). Without
    any of them the signed-in user of ``request`` (default: the current request) is the actor.
    ``project`` is a :class:`~medplum_auth.models.Project` or its id. ``reason`` is shown to project
    admins; ``operator_reason`` only in the Django admin. ``message`` is the log line's text.
    """
    if request is None:
        request = _current_request.get()
    if user is None and membership is None and client is None and request is not None:
        user = _session_user(request)
    if user is None and membership is not None:
        user_id: Any = membership.user_id
    else:
        user_id = getattr(user, "pk", None)
    if actor_display is None:
        if user is not None:
            actor_display = getattr(user, "email", "") or user.get_username()
        elif membership is not None:
            actor_display = membership.profile_display
        elif client is not None:
            actor_display = client.name
        else:
            actor_display = ""
    event = SecurityEvent(
        recorded=timezone.now(),
        event_type=event_type,
        outcome=int(outcome),
        reason=_text(reason, 64),
        operator_reason=_text(operator_reason, 64),
        project_id=getattr(project, "pk", project),
        actor_user="" if user_id is None else str(user_id),
        actor_membership="" if membership is None else str(membership.pk),
        actor_profile="" if membership is None else membership.profile,
        actor_client="" if client is None else client.client_id,
        actor_display=_text(actor_display, 255),
        subject=_text(subject, 255),
        subject_display=_text(subject_display, 255),
        remote_addr=None if request is None else client_address(request),
        user_agent="" if request is None else _text(request.META.get("HTTP_USER_AGENT", ""), 255),
        request_id="" if request is None else request_id(request),
        detail=_clean(detail) if detail else {},
    )
    event.save(force_insert=True)
    logger.info("%s event=%s outcome=%d project=%s actor=%s subject=%s request_id=%s",
                message or "security event", event_type, event.outcome, event.project_id or "-",
                event.actor_profile or (f"User/{event.actor_user}" if event.actor_user else "")
                or (f"ClientApplication/{event.actor_client}" if event.actor_client else "-"),
                event.subject or "-", event.request_id or "-")
    return event


def record_for_login(event_type: str, login: Any, *, client: Any = None, **kwargs: Any) -> SecurityEvent:
    """An event about a :class:`~medplum_auth.models.Login` (its tokens): its user, membership and
    client as the actor, ``Login/<id>`` as the subject. ``client``, when the caller has the login's
    client loaded already, spares a query."""
    membership = login.membership if login.membership_id else None
    user = login.user if login.user_id else None
    kwargs.setdefault("subject", f"Login/{login.pk}")
    return record(event_type, project=login.project_id, user=user, membership=membership,
                  client=client if client is not None else login.client, **kwargs)


def token_events_enabled() -> bool:
    return bool(auth_settings.AUDIT_TOKEN_EVENTS)


def record_sign_in(request: HttpRequest, *, email: str, user: Any, client: Any, throttled: bool = False,
                   reason: str | None = None) -> SecurityEvent:
    """A password sign-in at ``client``'s sign-in page or ``/auth/login``: success when ``user`` is
    given (and no ``reason``), else a failure.

    A failure's stored ``reason`` is ``invalid_credentials`` (or ``throttled``, or the given one,
    e.g. ``no_profile``) whether or not the email belongs to an account; only ``operator_reason``
    (Django admin) tells an unknown email from a wrong password. The failure names no user, just
    the email as typed. The password is never seen here.
    """
    project = client.project_id if client is not None else None
    if user is not None and reason is None:
        return record(EventType.SIGNIN_SUCCEEDED, request=request, project=project, user=user, client=client,
                      subject=f"User/{user.pk}", subject_display=getattr(user, "email", ""),
                      message=f"sign-in succeeded user={user.pk}")
    typed = _text((email or "").strip().lower(), 255)
    if throttled:
        public = operator = "throttled"
    elif reason is not None:
        public = operator = reason
    else:
        public, operator = INVALID_CREDENTIALS, _failure_cause(typed)
    return record(EventType.SIGNIN_FAILED, request=request, project=project, client=client,
                  outcome=Outcome.MINOR_FAILURE, reason=public, operator_reason=operator, actor_display=typed,
                  subject_display=typed, message="sign-in failed")


def _failure_cause(email: str) -> str:
    from django.contrib.auth import get_user_model

    if not email:
        return "unknown_email"
    users = list(get_user_model()._default_manager.filter(email__iexact=email)[:2])
    if len(users) != 1:
        return "unknown_email" if not users else "ambiguous_email"
    return "wrong_password" if users[0].is_active else "inactive_user"


PRUNE_BATCH = 10_000


def retention_days() -> int | None:
    """``AUDIT_RETENTION_DAYS`` checked: a positive integer, or ``None`` (keep forever)."""
    days = auth_settings.AUDIT_RETENTION_DAYS
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError("AUDIT_RETENTION_DAYS must be a positive number of days or None.")
    return days


def prune(older_than_days: int) -> int:
    """Delete the events recorded more than ``older_than_days`` days ago; return how many.

    In batches of :data:`PRUNE_BATCH` by primary key, so a first run over years of events does not
    hold one huge DELETE (the ``recorded`` index finds them).
    """
    from datetime import timedelta

    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted = 0
    while True:
        ids = list(SecurityEvent.objects.filter(recorded__lt=cutoff).order_by().values_list("pk", flat=True)
                   [:PRUNE_BATCH])
        if not ids:
            return deleted
        count, _ = SecurityEvent.objects.filter(pk__in=ids).delete()
        deleted += count
