"""Middleware: the audit trail's request id on every request and response; 503 when the database is busy."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from django.core.signals import got_request_exception
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from . import audit, database

log = logging.getLogger(__name__)


class RequestIdMiddleware:
    """Give every request an id (``request.request_id``) and send it back as ``X-Request-ID``.

    A valid incoming ``X-Request-ID`` (8 to 64 letters, digits, ``.``, ``_``, ``:`` or ``-``, as
    proxies and tracing systems send) is kept; anything else is replaced by a random id. The same
    id is stored with each security event of the request and appears in its log line. Put it
    first in ``MIDDLEWARE``; ``medplum_auth.wsgi``'s API stack keeps it (it is not a browser one).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = audit.request_id(request)
        token = audit.bind_request(request)
        try:
            response = self.get_response(request)
        finally:
            audit.unbind_request(token)
        response[audit.REQUEST_ID_HEADER] = rid
        return response


#: Views of ``medplum_auth.urls`` whose errors are RFC 6749 JSON objects.
OAUTH_JSON_VIEWS = frozenset({"token", "introspect", "revoke", "userinfo", "openid-configuration",
                              "oauth-authorization-server", "jwks"})


class DatabaseBusyMiddleware:
    """A view that fails because the database is busy or unreachable answers 503 with ``Retry-After``.

    Busy: SQLite gives up on a lock after its busy timeout (``medplum_auth.database.SQLITE_OPTIONS``);
    PostgreSQL after ``lock_timeout``, or with a serialization failure or deadlock. Unavailable:
    PostgreSQL refuses or drops the connection, or is shutting down or starting up
    (:func:`medplum_auth.database.is_unavailable`). Either way the request's transaction is rolled
    back, so nothing it wrote remains, and the client may simply retry: the answer says so in
    each API's own shape instead of Django's 500 page. OAuth endpoints:
    ``{"error": "temporarily_unavailable"}`` (RFC 6749 §4.1.2.1); ``/auth/*`` and FHIR: an
    OperationOutcome with issue code ``transient`` (the FHIR API's own DRF exception handler
    answers first); every other page: the HTML error page. Other exceptions pass through.

    A lock timeout is logged per request; an outage once per process when it starts and once
    when the database is reachable again (``database.outage``), and :class:`medplum_auth.database.QuietOutage` keeps
    ``django.request`` from logging each of its 503s.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        failed = getattr(request, FAILED_ATTRIBUTE, None)
        if failed is not None and response.status_code == 500:
            # Raised outside the view (a later middleware, e.g. the session save on the way out):
            # Django already turned it into its 500 page; :func:`_note_retryable` kept it.
            return self.answer(request, failed)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if database.is_busy(exception) or database.is_unavailable(exception):
            return self.answer(request, exception)
        return None

    @staticmethod
    def answer(request: HttpRequest, exception: BaseException) -> HttpResponse:
        if database.is_busy(exception):
            log.warning("database busy, answered 503: %s %s: %s", request.method, request.path, exception)
            return busy_response(request)
        if not getattr(request, database.UNAVAILABLE_ATTRIBUTE, False):
            database.note_unavailable(request, exception)
        return busy_response(request, database.UNAVAILABLE_TEXT)


#: Request attribute: the busy/unavailable database error an inner middleware raised.
FAILED_ATTRIBUTE = "medplum_database_failure"


@receiver(got_request_exception)
def _note_retryable(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """Django sends this for an exception no view or ``process_exception`` answered, before it
    logs and renders the 500: keep a busy or unavailable database error for
    :class:`DatabaseBusyMiddleware`, and mark an outage's so ``QuietOutage`` drops its log line."""
    exception = sys.exc_info()[1]
    if request is None or exception is None or not database.is_retryable(exception):
        return
    setattr(request, FAILED_ATTRIBUTE, exception)
    if database.is_unavailable(exception):
        database.note_unavailable(request, exception)


def busy_response(request: HttpRequest, text: str = database.BUSY_TEXT) -> HttpResponse:
    """The 503 of :class:`DatabaseBusyMiddleware` in the shape of the view ``request`` went to."""
    from .authorization import error_page
    from .views.auth_api import outcome
    from .views.oauth import oauth_error

    match = request.resolver_match
    name = match.url_name if match else None
    namespace = match.namespace if match else ""
    if namespace == "medplum_auth" and name in OAUTH_JSON_VIEWS:
        response: HttpResponse = oauth_error("temporarily_unavailable", text, status=503)
    elif namespace == "fhir_api" or (namespace == "medplum_auth" and (name or "").startswith("auth-")):
        response = outcome(text, status=503, code="transient")
    else:
        response = error_page(request, "Temporarily unavailable", text, status=503)
    response["Retry-After"] = str(database.RETRY_AFTER_SECONDS)
    return response
