"""Security headers for every page of the sign-in flow."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers


def auth_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """No framing, no referrer leaks of codes or state, no caching (RFC 9700 §4.2.4, §4.16).

    ``same-origin``, not ``no-referrer``: under ``no-referrer`` browsers send ``Origin: null`` with
    our own form POSTs (Fetch "serializing a request origin"), which Django's CSRF check rejects, so
    no one could sign in. ``same-origin`` still sends nothing to any other origin (the client's
    redirect URI included).
    """

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["X-Frame-Options"] = "DENY"
        response["Content-Security-Policy"] = "frame-ancestors 'none'"
        response["Referrer-Policy"] = "same-origin"
        response["X-Content-Type-Options"] = "nosniff"
        add_never_cache_headers(response)
        return response

    return wrapped
