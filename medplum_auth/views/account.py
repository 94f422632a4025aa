"""The signed-in user's own page: the apps they allowed (remembered consents) and their sessions.

Revoking an app deletes its remembered consent and revokes the user's logins at it; revoking a
session revokes that one login. Either way the tokens issued from it stop working at once.
"""

from __future__ import annotations

import time

from django.contrib.auth import login as django_login
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from .. import authorization, services
from ..logins import usable_logins
from ..models import Consent
from ..signin import authenticate_email
from .decorators import auth_page

DONE = {"app": "Access revoked: the app must ask you again, and its sessions have ended.",
        "session": "Session revoked."}


@method_decorator([auth_page, csrf_protect, sensitive_post_parameters("password")], name="dispatch")
class AccountView(View):
    """``GET /oauth2/account``: sign in (email + password) or see and revoke apps and sessions."""

    template_name = "medplum_auth/account.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.page(request)

    def page(self, request: HttpRequest, status: int = 200, **extra: object) -> HttpResponse:
        context: dict[str, object] = {"done": DONE.get(request.GET.get("done", "")), "account_user": request.user,
                                      **extra}
        if request.user.is_authenticated:
            context["consents"] = (Consent.objects.filter(user=request.user).select_related("client__project")
                                   .order_by("client__name", "pk"))
            context["sessions"] = usable_logins(user=request.user).order_by("-auth_time")
        return render(request, self.template_name, context, status=status)

    def post(self, request: HttpRequest) -> HttpResponse:
        action = request.POST.get("action", "")
        if action == "signin":
            return self.sign_in(request)
        if not request.user.is_authenticated:
            return self.page(request, status=403, error="Sign in first.")
        if action == "revoke-app":
            consent = Consent.objects.filter(user=request.user, pk=_int(request.POST.get("consent"))).first()
            if consent is None:
                raise Http404("No such app.")
            services.revoke_consent(consent)
            return _done("app")
        if action == "revoke-session":
            login = usable_logins(user=request.user).filter(pk=_uuid(request.POST.get("login"))).first()
            if login is None:
                raise Http404("No such session.")
            services.revoke_login(login, reason="revoked_by_user")
            return _done("session")
        return self.page(request, status=400, error="Unknown action.")

    def sign_in(self, request: HttpRequest) -> HttpResponse:
        email = request.POST.get("email", "")
        user, error = authenticate_email(email, request.POST.get("password", ""), request.META.get("REMOTE_ADDR"))
        if user is None:
            return self.page(request, status=400, error=error, email=email)
        django_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        request.session[authorization.AUTH_TIME_KEY] = time.time()
        return HttpResponseRedirect(reverse("medplum_auth:account"), status=303)


def _done(what: str) -> HttpResponse:
    return HttpResponseRedirect(f"{reverse('medplum_auth:account')}?done={what}", status=303)


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isascii() and value.isdigit() and len(value) < 19 else None


def _uuid(value: str | None) -> str | None:
    import uuid

    try:
        return str(uuid.UUID(value or ""))
    except ValueError:
        return None
