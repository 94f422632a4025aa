"""Middleware of the audit trail: the request id on every request and response."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from . import audit


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
