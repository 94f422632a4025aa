"""Server-rendered password reset: "Forgot password?" (email a link) and the link's set-password page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import SetPasswordForm
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.urls import reverse, reverse_lazy
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.views import View
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from .. import audit, authorization, passwords, throttle
from ..conf import auth_settings
from .decorators import auth_page

#: The sign-in request (``rid``) a reset started from, to continue it once the password is set.
RESUME_KEY = "medplum_auth.reset_rid"
THROTTLED = _("Too many password reset requests. Try again later.")


class _RunsAfterResponse:
    """Runs ``after`` once the response has been sent: ``HttpResponse.close()`` is called by the
    WSGI server after the last byte is written (and by Django's test client)."""

    after: Callable[[], None] | None = None

    def close(self) -> None:
        after, self.after = self.after, None
        try:
            if after is not None:
                after()
        finally:
            super().close()  # type: ignore[misc]


class HttpResponseThen(_RunsAfterResponse, HttpResponse):
    def __init__(self, *args: Any, after: Callable[[], None], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.after = after


class JsonResponseThen(_RunsAfterResponse, JsonResponse):
    def __init__(self, *args: Any, after: Callable[[], None], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.after = after


class ForgotPasswordForm(forms.Form):
    email = forms.EmailField(label=_("Email"), max_length=254,
                             widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}))


class ResetSetPasswordForm(SetPasswordForm):
    """Django's set-password form (``AUTH_PASSWORD_VALIDATORS``), saved through
    :func:`medplum_auth.passwords.set_password`, which revokes the user's logins."""

    def save(self, commit: bool = True) -> Any:
        passwords.set_password(self.user, self.cleaned_data["new_password1"], reason="password_reset")
        return self.user


@method_decorator([auth_page, csrf_protect], name="dispatch")
class ForgotPasswordView(View):
    """``/oauth2/resetpassword``: one answer ("check your email") whether or not the email is known."""

    template_name = "medplum_auth/password_reset.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        rid = request.GET.get("rid", "")
        return self.page(request, ForgotPasswordForm(), rid)

    def post(self, request: HttpRequest) -> HttpResponse:
        rid = request.POST.get("rid", "")
        form = ForgotPasswordForm(request.POST)
        if not form.is_valid():
            return self.page(request, form, rid, status=400)
        email = form.cleaned_data["email"]
        counters = passwords.reset_counters(email, audit.client_address(request))
        wait = throttle.retry_after(counters)
        if wait is not None:
            response = self.page(request, form, rid, status=429, error=THROTTLED)
            response["Retry-After"] = str(wait)
            return response
        throttle.record_failure(counters)
        if authorization.load(request, rid) is not None:
            request.session[RESUME_KEY] = rid
        deliver = passwords.request_reset(email, request)
        content = render_to_string("medplum_auth/password_reset_sent.html", {
            "email": email, "lifetime_minutes": int(auth_settings.PASSWORD_RESET_LIFETIME) // 60,
        }, request)
        return HttpResponseThen(content, after=deliver)

    def page(self, request: HttpRequest, form: ForgotPasswordForm, rid: str, status: int = 200,
             error: str | None = None) -> HttpResponse:
        content = render_to_string(self.template_name, {"form": form, "rid": rid, "error": error}, request)
        return HttpResponse(content, status=status)


@method_decorator([auth_page, sensitive_post_parameters()], name="dispatch")
class SetPasswordView(auth_views.PasswordResetConfirmView):
    """``/oauth2/setpassword/<id>/<secret>``: the emailed link. Django moves the secret from the
    URL into the session before the form is shown, so it does not leak through the page's URL."""

    template_name = "medplum_auth/set_password.html"
    form_class = ResetSetPasswordForm
    token_generator = passwords.reset_token_generator
    success_url = reverse_lazy("medplum_auth:set-password-done")
    post_reset_login = False

    def get_user(self, uidb64: str) -> Any:
        return passwords.user_for_id(uidb64)


@method_decorator(auth_page, name="dispatch")
class SetPasswordDoneView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        rid = request.session.get(RESUME_KEY, "")
        resume = None
        if rid and authorization.load(request, rid) is not None:
            resume = f"{reverse('medplum_auth:signin')}?rid={rid}"
        content = render_to_string("medplum_auth/set_password_done.html", {"resume_url": resume}, request)
        return HttpResponse(content)
