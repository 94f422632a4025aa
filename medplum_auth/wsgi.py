"""A WSGI application that serves the Bearer-token APIs through a shorter middleware stack.

Sign-in pages, the authorization endpoint and the admin need sessions, CSRF, authentication
and messages. Token, userinfo, introspection, revocation, discovery and FHIR requests carry
their credentials in every request and use none of them, yet each of those middleware runs on
every request: on this machine the full stack of the example site cost more CPU than the
discovery view itself. This application sends the paths in ``API_PATHS`` to a second Django
handler built from ``API_MIDDLEWARE`` (by default the site's ``MIDDLEWARE`` without the
browser-session ones), and everything else to the ordinary handler. Both share the URLconf,
the settings and the database connections; only the middleware differ.

Use it in the site's ``wsgi.py`` instead of Django's ``get_wsgi_application()``.
"""

from __future__ import annotations

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
    "django.middleware.common.CommonMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
})


def api_middleware() -> list[str]:
    """``API_MIDDLEWARE``, or the site's ``MIDDLEWARE`` without :data:`BROWSER_MIDDLEWARE`."""
    configured = auth_settings.API_MIDDLEWARE
    if configured is not None:
        return list(configured)
    return [path for path in settings.MIDDLEWARE if path not in BROWSER_MIDDLEWARE]


def is_api_path(path: str, api_paths: Iterable[str]) -> bool:
    """Whether ``path`` is one of ``api_paths``: an entry ending in ``/`` is a prefix, others exact."""
    return any(path.startswith(entry) if entry.endswith("/") else path == entry for entry in api_paths)


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


class APIPathsApplication:
    """Route ``API_PATHS`` to the API handler and everything else to the site's handler."""

    def __init__(self, site: WSGIHandler, api: WSGIHandler, api_paths: Iterable[str]):
        self.site = site
        self.api = api
        self.exact = frozenset(p for p in api_paths if not p.endswith("/"))
        self.prefixes = tuple(p for p in api_paths if p.endswith("/"))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        handler = self.api if path in self.exact or path.startswith(self.prefixes) else self.site
        return handler(environ, start_response)


def get_wsgi_application() -> APIPathsApplication:
    """Like :func:`django.core.wsgi.get_wsgi_application`, with the API paths on their own stack."""
    django.setup(set_prefix=False)
    return APIPathsApplication(WSGIHandler(), MiddlewareHandler(api_middleware()), auth_settings.API_PATHS)
