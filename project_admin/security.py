"""Who may use the Project Admin pages, and the headers every page is sent with."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from medplum_auth.models import Project
from medplum_auth.views.decorators import auth_page

#: The sign-in pages' headers plus a CSP that allows only this site's own scripts and styles:
#: the pages have no inline script or style, so an injected one would not run.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def admin_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The sign-in pages' security headers (no framing, no referrer to other origins, no caching),
    with the stricter CSP above."""
    protected = auth_page(view)

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = protected(request, *args, **kwargs)
        response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    return wrapped


def administered_projects(user: Any) -> QuerySet[Project]:
    """Projects ``user`` administers: where they hold an active ``admin`` membership; all for superusers."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(
        memberships__user=user, memberships__admin=True, memberships__active=True).distinct()
