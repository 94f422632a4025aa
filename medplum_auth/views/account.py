"""Session sign-in with a second factor, and the signed-in user's own pages.

Every page that signs a user in with a password (the code flow's sign-in page, Project Admin's,
the account sign-in that the example site also mounts at ``/admin/login/``) hands a user who
needs a second factor to :func:`begin_second_factor`: the session then holds only "this user
has passed the password" (no Django login yet) and ``/oauth2/mfa`` asks for the code, a
recovery code or a security key (or, for a member of an MFA-required project, has them enroll an
authenticator app), then signs them in and goes on to where they were going.

``/oauth2/account`` lists the apps the user allowed (remembered consents) and their sessions, each
with Revoke: revoking an app deletes its consent and revokes the user's logins at it; revoking a
session revokes that one login. ``/oauth2/account/security`` turns on an authenticator app,
registers or removes security keys and makes new recovery codes.
"""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth import get_user_model
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters

from .. import audit, authorization, mfa, passkeys, services
from ..logins import usable_logins
from ..models import Consent, Project, WebAuthnCredential
from ..signin import STATE_KEY, STATE_SECONDS, THROTTLED, authenticate_email, begin_second_factor, establish_session
from .decorators import auth_page


def safe_next(request: HttpRequest, value: str | None, default: str) -> str:
    if value and url_has_allowed_host_and_scheme(value, allowed_hosts={request.get_host()},
                                                 require_https=request.is_secure()):
        return value
    return default


class _SecondFactorMixin:
    """The parked sign-in of :func:`begin_second_factor` (``None`` when missing or stale)."""

    request: HttpRequest

    def state(self) -> dict[str, Any] | None:
        state = self.request.session.get(STATE_KEY)
        if not isinstance(state, dict) or time.time() - float(state.get("at", 0)) > STATE_SECONDS:
            return None
        return state

    def state_user(self, state: dict[str, Any]) -> Any:
        user = get_user_model()._default_manager.filter(pk=state["user"]).first()
        return user if user is not None and user.is_active else None

    def failed(self, user: Any, exc: mfa.MfaError) -> None:
        audit.record(audit.EventType.MFA_FAILED, request=self.request, user=user, subject=f"User/{user.pk}",
                     project=(self.state() or {}).get("project") or None, outcome=audit.Outcome.MINOR_FAILURE,
                     reason="throttled" if isinstance(exc, mfa.Throttled) else "invalid_token")

    def passed(self, state: dict[str, Any], user: Any, method: str, recovery_codes: list[str]) -> HttpResponse:
        request = self.request
        event = audit.EventType.MFA_ENROLLED if recovery_codes else audit.EventType.MFA_VERIFIED
        audit.record(event, request=request, user=user, subject=f"User/{user.pk}", project=state.get("project") or None,
                     detail={"method": "totp" if method == "otp" else "webauthn"})
        request.session.pop(STATE_KEY, None)
        establish_session(request, user, mfa.amr("pwd", method))
        if recovery_codes:
            return render(request, "medplum_auth/recovery_codes.html", {"codes": recovery_codes, "next": state["next"]})
        return HttpResponseRedirect(state["next"])


@method_decorator([auth_page, csrf_protect, sensitive_post_parameters("code")], name="dispatch")
class MfaView(_SecondFactorMixin, View):
    """``/oauth2/mfa``: a code from the authenticator app or a recovery code (or a security key,
    through :class:`MfaWebAuthnView`); enrolling an app when the project requires MFA."""

    template_name = "medplum_auth/mfa.html"

    def page(self, state: dict[str, Any], user: Any, status: int = 200, **extra: Any) -> HttpResponse:
        factors = mfa.factors(user)
        context: dict[str, Any] = {"factors": factors, "label": state.get("label", ""), **extra}
        if not factors:
            context["enrollment"] = mfa.start_totp(user)
            project = Project.objects.filter(pk=state.get("project") or None).first()
            context["project_name"] = project.name if project is not None else ""
        return render(self.request, self.template_name, context, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        state = self.state()
        user = self.state_user(state) if state else None
        if user is None:
            return authorization.expired_page(request)
        return self.page(state, user)

    def post(self, request: HttpRequest) -> HttpResponse:
        state = self.state()
        user = self.state_user(state) if state else None
        if user is None:
            return authorization.expired_page(request)
        code = request.POST.get("code", "")
        try:
            if mfa.is_enrolled(user):
                method, recovery_codes = mfa.verify_second_factor(user, code), []
            else:
                method, recovery_codes = "otp", mfa.confirm_totp(user, code)
        except mfa.MfaError as exc:
            self.failed(user, exc)
            message = str(exc) if isinstance(exc, mfa.Throttled) else "That code is not valid. Try the current one."
            return self.page(state, user, status=400, error=message)
        return self.passed(state, user, method, recovery_codes)


@method_decorator([auth_page, csrf_protect], name="dispatch")
class MfaWebAuthnView(_SecondFactorMixin, View):
    """``GET``: the options for ``navigator.credentials.get()``; ``POST`` (form field
    ``credential``, its JSON answer): verify and sign in."""

    def get(self, request: HttpRequest) -> HttpResponse:
        state = self.state()
        user = self.state_user(state) if state else None
        if user is None or not WebAuthnCredential.objects.filter(user=user).exists():
            return JsonResponse({"error": "No sign-in is waiting for a security key."}, status=400)
        options, challenge = passkeys.authentication_options(user)
        state["challenge"] = challenge
        request.session[STATE_KEY] = state
        return HttpResponse(options, content_type="application/json")

    def post(self, request: HttpRequest) -> HttpResponse:
        state = self.state()
        user = self.state_user(state) if state else None
        if user is None:
            return authorization.expired_page(request)
        challenge = state.pop("challenge", "")  # one answer per challenge
        request.session[STATE_KEY] = state
        try:
            method = passkeys.authenticate(user, request.POST.get("credential", ""), challenge)
        except mfa.MfaError as exc:
            self.failed(user, exc)
            message = str(exc) if isinstance(exc, mfa.Throttled) else "The security key was not accepted."
            return MfaView(request=request).page(state, user, status=400, error=message)
        return self.passed(state, user, method, [])


@method_decorator([auth_page, csrf_protect, sensitive_post_parameters("password")], name="dispatch")
class AccountSignInView(View):
    """``/oauth2/account/signin?next=``: email and password for pages outside an authorization
    request (the account page, and the Django admin on the example site), then the second factor."""

    template_name = "medplum_auth/account_signin.html"

    def next_url(self) -> str:
        request = self.request
        return safe_next(request, request.POST.get("next") or request.GET.get("next"),
                         reverse("medplum_auth:account"))

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, self.template_name, {"next": self.next_url()})

    def post(self, request: HttpRequest) -> HttpResponse:
        email = request.POST.get("email", "")
        user, error = authenticate_email(email, request.POST.get("password", ""), audit.client_address(request))
        audit.record_sign_in(request, email=email, user=user, client=None, throttled=error == THROTTLED)
        if user is None:
            return render(request, self.template_name, {"next": self.next_url(), "email": email, "error": error},
                          status=400)
        if mfa.required_for(user):
            return begin_second_factor(request, user, self.next_url(), label="your account")
        establish_session(request, user, "pwd")
        return HttpResponseRedirect(self.next_url())


@method_decorator([auth_page, csrf_protect, sensitive_post_parameters("code")], name="dispatch")
class SecurityView(View):
    """``/oauth2/account/security``: the signed-in user's second factors.

    Actions (``POST action=…``): ``totp-enroll`` (code), ``totp-disable`` (a current code),
    ``recovery-codes`` (new ones), ``key-remove`` (key id). Security keys are added through
    :class:`AccountWebAuthnView`.
    """

    template_name = "medplum_auth/account_security.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            signin = reverse("medplum_auth:account-signin")
            return HttpResponseRedirect(f"{signin}?next={reverse('medplum_auth:account-security')}")
        return super().dispatch(request, *args, **kwargs)

    def page(self, status: int = 200, **extra: Any) -> HttpResponse:
        user = self.request.user
        device = mfa.totp_device(user)
        context: dict[str, Any] = {
            "totp_on": device is not None and device.confirmed_at is not None,
            "keys": WebAuthnCredential.objects.filter(user=user).order_by("created"),
            "recovery_left": mfa.remaining_recovery_codes(user), "enrolled": mfa.is_enrolled(user), **extra}
        if not context["totp_on"]:
            context["enrollment"] = mfa.start_totp(user)
        return render(self.request, self.template_name, context, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.page()

    def post(self, request: HttpRequest) -> HttpResponse:
        user, action = request.user, request.POST.get("action", "")
        try:
            if action == "totp-enroll":
                codes = mfa.confirm_totp(user, request.POST.get("code", ""))
                self.record(audit.EventType.MFA_ENROLLED, "totp")
                return self.page(message="Your authenticator app is on.", codes=codes or None)
            if action == "totp-disable":
                mfa.disable_totp(user, request.POST.get("code", ""))
                self.record(audit.EventType.MFA_DISABLED, "totp")
                return self.page(message="Your authenticator app is off.")
            if action == "recovery-codes" and mfa.is_enrolled(user):
                return self.page(message="New recovery codes; the old ones no longer work.",
                                 codes=mfa.new_recovery_codes(user))
            if action == "key-remove":
                removed, _ = WebAuthnCredential.objects.filter(user=user, pk=_int(request.POST.get("key"))).delete()
                if removed:
                    self.record(audit.EventType.MFA_DISABLED, "webauthn")
                    return self.page(message="Security key removed.")
        except mfa.MfaError as exc:
            audit.record(audit.EventType.MFA_FAILED, request=request, user=user, subject=f"User/{user.pk}",
                         outcome=audit.Outcome.MINOR_FAILURE,
                         reason="throttled" if isinstance(exc, mfa.Throttled) else "invalid_token")
            text = str(exc) if str(exc) != "Invalid token" else "That code is not valid. Try the current one."
            return self.page(status=400, error=text)
        return self.page(status=400, error="Unknown action.")

    def record(self, event: str, method: str) -> None:
        user = self.request.user
        audit.record(event, request=self.request, user=user, subject=f"User/{user.pk}", detail={"method": method})


@method_decorator([auth_page, csrf_protect], name="dispatch")
class AccountWebAuthnView(View):
    """``GET``: options for ``navigator.credentials.create()``; ``POST`` (``credential``, ``name``):
    register the key. For the signed-in user of ``/oauth2/account/security``."""

    CHALLENGE_KEY = "medplum_auth_webauthn_registration"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return JsonResponse({"error": "Sign in first."}, status=401)
        return super().dispatch(request, *args, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        options, challenge = passkeys.registration_options(request.user)
        request.session[self.CHALLENGE_KEY] = challenge
        return HttpResponse(options, content_type="application/json")

    def post(self, request: HttpRequest) -> HttpResponse:
        challenge = request.session.pop(self.CHALLENGE_KEY, "")
        account = SecurityView(request=request)
        if not challenge:
            return account.page(status=400, error="Start adding the security key again.")
        try:
            key, codes = passkeys.register(request.user, request.POST.get("credential", ""), challenge,
                                           request.POST.get("name", ""))
        except mfa.MfaError as exc:
            return account.page(status=400, error=str(exc))
        audit.record(audit.EventType.MFA_ENROLLED, request=request, user=request.user,
                     subject=f"User/{request.user.pk}", detail={"method": "webauthn", "key": key.name})
        return account.page(message=f"Security key “{key.name}” added.", codes=codes or None)


DONE = {"app": "Access revoked: the app must ask you again, and its sessions have ended.",
        "session": "Session revoked."}


@method_decorator([auth_page, csrf_protect], name="dispatch")
class AccountView(View):
    """``GET /oauth2/account``: see and revoke apps and sessions (signed out: to the account sign-in,
    which asks for the second factor too); the second factors are on :class:`SecurityView`."""

    template_name = "medplum_auth/account.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            signin = reverse("medplum_auth:account-signin")
            return HttpResponseRedirect(f"{signin}?next={reverse('medplum_auth:account')}")
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
