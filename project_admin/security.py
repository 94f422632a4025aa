"""Who may use the Project Admin pages, and the headers every page is sent with."""

from __future__ import annotations

import re
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


#: A scheme://host[:port] origin with nothing that could end or extend a CSP directive.
ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.\-]+(?::\d{1,5})?\Z|^https?://\[[0-9A-Fa-f:]+\](?::\d{1,5})?\Z")


def admin_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The sign-in pages' security headers (no framing, no referrer to other origins, no caching),
    with the stricter CSP above."""
    protected = auth_page(view)

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = protected(request, *args, **kwargs)
        policy = CONTENT_SECURITY_POLICY
        # A form that ends in a redirect to another origin (the SMART "Launch app" action) needs
        # that origin in form-action, or browsers block the redirect.
        extra = [o for o in getattr(response, "form_action_origins", ()) if ORIGIN_RE.match(o)]
        if extra:
            policy = policy.replace("form-action 'self'", " ".join(["form-action 'self'", *extra]))
        response["Content-Security-Policy"] = policy
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
