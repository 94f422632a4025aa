"""A WSGI application that serves the Bearer-token APIs through a shorter middleware stack.

Sign-in pages, the authorization endpoint and the admin need sessions, CSRF, authentication
and messages. Token, userinfo, introspection, revocation, discovery and FHIR requests carry
their credentials in every request and use none of them, yet each of those middleware runs on
every request: on this machine the full stack of the example site cost more CPU than the
discovery view itself. This application sends the paths in ``API_PATHS`` to a second Django
handler built from ``API_MIDDLEWARE`` (by default the site's ``MIDDLEWARE`` without the
browser-session ones), and everything else to the ordinary handler. Both share the URLconf,
the settings and the database connections; only the middleware differ.

The discovery documents (``API_CACHED_DOCUMENTS``) are also answered from memory for
``DOCUMENT_CACHE_SECONDS`` after Django has produced them once for the same host, scheme and
``Origin``: they are public and say ``Cache-Control: public``, change only with settings and
signing keys (whose own per-process cache has the same lifetime), and are fetched far more often
than anything else. Only a 200 with ``Cache-Control: public`` and no cookie is kept.

Use it in the site's ``wsgi.py`` instead of Django's ``get_wsgi_application()``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

from .conf import auth_settings

#: Middleware that only browser sessions need; left out of the API stack by default.
BROWSER_MIDDLEWARE = frozenset({
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
})


def api_middleware() -> list[str]:
    """``API_MIDDLEWARE``, or the site's ``MIDDLEWARE`` without :data:`BROWSER_MIDDLEWARE`."""
    configured = auth_settings.API_MIDDLEWARE
    if configured is not None:
        return list(configured)
    return [path for path in settings.MIDDLEWARE if path not in BROWSER_MIDDLEWARE]


class MiddlewareHandler(WSGIHandler):
    """Django's WSGI handler with its own middleware list instead of ``settings.MIDDLEWARE``."""

    def __init__(self, middleware: list[str]):
        self.middleware = middleware
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler.load_middleware reads settings.MIDDLEWARE; give it this handler's list for
        # the duration of the load (once, at start-up, before any request is served).
        site_middleware = settings.MIDDLEWARE
        settings.MIDDLEWARE = self.middleware
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = site_middleware


#: Seconds a discovery document is answered from memory (as long as the signing-key cache).
DOCUMENT_CACHE_SECONDS = 30

_Entry = tuple[float, str, list[tuple[str, str]], bytes]


class APIPathsApplication:
    """Route ``API_PATHS`` to the API handler and everything else to the site's handler."""

    def __init__(self, site: WSGIHandler, api: WSGIHandler, api_paths: Iterable[str],
                 cached_documents: Iterable[str] = ()):
        self.site = site
        self.api = api
        self.exact = frozenset(p for p in api_paths if not p.endswith("/"))
        self.prefixes = tuple(p for p in api_paths if p.endswith("/"))
        self.cached_documents = frozenset(cached_documents)
        self._documents: dict[tuple[Any, ...], _Entry] = {}
        self._lock = threading.Lock()

    def is_api(self, path: str) -> bool:
        """Whether ``path`` is an API path: an entry ending in ``/`` is a prefix, others exact."""
        return path in self.exact or path.startswith(self.prefixes)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path in self.cached_documents and environ.get("REQUEST_METHOD") == "GET" \
                and not environ.get("QUERY_STRING"):
            return self._document(path, environ, start_response)
        return (self.api if self.is_api(path) else self.site)(environ, start_response)

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

        result = self.api(environ, capture)
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


def get_wsgi_application() -> APIPathsApplication:
    """Like :func:`django.core.wsgi.get_wsgi_application`, with the API paths on their own stack."""
    django.setup(set_prefix=False)
    return APIPathsApplication(WSGIHandler(), MiddlewareHandler(api_middleware()), auth_settings.API_PATHS,
                               auth_settings.API_CACHED_DOCUMENTS)
