"""A WSGI application that answers the public discovery documents from memory.

The discovery documents (``API_CACHED_DOCUMENTS``) are answered from memory for
``DOCUMENT_CACHE_SECONDS`` after Django has produced them once for the same host, scheme and
``Origin``: they are public and say ``Cache-Control: public``, change only with settings and
signing keys, and are fetched far more often than anything else. Only a 200 with
``Cache-Control: public`` and no cookie is kept. Every other request goes to Django's own
``WSGIHandler`` with the site's ``MIDDLEWARE`` (the API views need no session middleware: they
authenticate every request and are ``csrf_exempt``; sessions, users and messages are lazy and cost
them no query). An earlier version ran the API paths through a second middleware stack built by
swapping ``settings.MIDDLEWARE`` while it loaded; that relied on how Django loads middleware, so it
is gone (issue 11).

Use it in the site's ``wsgi.py`` instead of Django's ``get_wsgi_application()`` (optional).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import django
from django.core.handlers.wsgi import WSGIHandler

from .conf import auth_settings

#: Seconds a discovery document is answered from memory (as long as the signing-key cache).
DOCUMENT_CACHE_SECONDS = 30

_Entry = tuple[float, str, list[tuple[str, str]], bytes]


class CachedDocumentsApplication:
    """Django's handler, with ``cached_documents`` answered from memory once produced."""

    def __init__(self, site: WSGIHandler, cached_documents: Iterable[str] = ()):
        self.site = site
        self.cached_documents = frozenset(cached_documents)
        self._documents: dict[tuple[Any, ...], _Entry] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path in self.cached_documents and environ.get("REQUEST_METHOD") == "GET" \
                and not environ.get("QUERY_STRING"):
            return self._document(path, environ, start_response)
        return self.site(environ, start_response)

    def _document(self, path: str, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        key = (path, environ.get("HTTP_HOST"), environ.get("SERVER_NAME"), environ.get("SERVER_PORT"),
               environ.get("wsgi.url_scheme"), environ.get("HTTP_X_FORWARDED_PROTO"), environ.get("HTTP_ORIGIN"))
        now = time.monotonic()
        entry = self._documents.get(key)
        if entry is not None and now < entry[0]:
            start_response(entry[1], list(entry[2]))
            return [entry[3]]
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, list(headers)
            return start_response(status, headers, exc_info)

        result = self.site(environ, capture)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()  # request_finished: connections are released as after any request
        headers = {name.lower(): value for name, value in captured.get("headers", [])}
        if captured.get("status", "").startswith("200 ") and "set-cookie" not in headers \
                and "public" in headers.get("cache-control", ""):
            with self._lock:
                if len(self._documents) >= 256:  # many hosts or origins: start over rather than grow
                    self._documents.clear()
                self._documents[key] = (now + DOCUMENT_CACHE_SECONDS, captured["status"], captured["headers"], body)
        return [body]


def get_wsgi_application() -> CachedDocumentsApplication:
    """:func:`django.core.wsgi.get_wsgi_application`, with the discovery documents from memory."""
    django.setup(set_prefix=False)
    return CachedDocumentsApplication(WSGIHandler(), auth_settings.API_CACHED_DOCUMENTS)
