"""Medplum's MFA API (``/auth/mfa/*``): the second step of ``/auth/login`` and TOTP enrollment.

* ``POST /auth/mfa/verify {login, token}``: the code (or a recovery code) of an enrolled user
  whose ``/auth/login`` answered ``mfaRequired``; answers as ``/auth/login`` would have
  (``{login, code}`` or ``{login, memberships}``).
* ``POST /auth/mfa/login-enroll {login, token}``: the first code of a user whose project
  requires MFA (``/auth/login`` answered ``mfaEnrollRequired`` with the QR code); enrolls and
  signs in, adding ``recoveryCodes`` (shown once).
* ``GET /auth/mfa/status``, ``POST /auth/mfa/enroll {token}``, ``POST /auth/mfa/disable {token}``
  with a Bearer token: Medplum's account-page enrollment.

Errors are 400 OperationOutcomes ("Invalid token", "Already enrolled" …); too many wrong codes
is a 429 with ``Retry-After``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from datetime import timedelta
from typing import Any

from django.contrib.auth import login as django_login
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from .. import audit, authorization, logins, mfa
from ..models import Login
from .auth_api import (
    ALL_OK,
    PROFILE_SELECTION_SECONDS,
    _json_body,
    _membership_summary,
    _uuid_or_none,
    outcome,
    user_login,
)


def _error(exc: mfa.MfaError, expression: str = "token") -> HttpResponse:
    if isinstance(exc, mfa.Throttled):
        response = outcome(str(exc), status=429, code="throttled")
        response["Retry-After"] = str(exc.retry_after)
        return response
    return outcome(str(exc), expression=expression)


def _reason(exc: mfa.MfaError) -> str:
    return "throttled" if isinstance(exc, mfa.Throttled) else str(exc).lower().replace(" ", "_")


def _record_failure(request: HttpRequest, user: Any, exc: mfa.MfaError) -> None:
    audit.record(audit.EventType.MFA_FAILED, request=request, user=user, subject=f"User/{user.pk}",
                 outcome=audit.Outcome.MINOR_FAILURE, reason=_reason(exc))


class _PendingLoginView(View, ABC):
    """A ``/auth/login`` login awaiting its second factor: fresh, not granted, not revoked."""

    http_method_names = ["post", "options"]
    event = audit.EventType.MFA_VERIFIED

    @abstractmethod
    def second_factor(self, login: Login, token: Any) -> tuple[str, list[str]]:
        """Check ``token`` for ``login``'s user: ``(amr method, new recovery codes)`` or :class:`MfaError`."""

    def post(self, request: HttpRequest) -> HttpResponse:
        data = _json_body(request)
        if data is None:
            return outcome("Request body must be a JSON object (Content-Type: application/json).")
        if not data.get("login"):
            return outcome("Missing login", expression="login")
        if not data.get("token"):
            return outcome("Missing token", expression="token")
        with transaction.atomic():
            login = (Login.objects.select_for_update(of=("self",)).select_related("user", "client", "project")
                     .filter(pk=_uuid_or_none(data.get("login")), awaiting_mfa=True).first())
            fresh = login and login.created > timezone.now() - timedelta(seconds=PROFILE_SELECTION_SECONDS)
            if not login or not fresh or login.revoked_at or login.granted_at or not login.user.is_active:
                return outcome("Invalid login", expression="login")
            try:
                method, recovery_codes = self.second_factor(login, data.get("token"))
            except mfa.MfaError as exc:
                audit.record_for_login(audit.EventType.MFA_FAILED, login, request=request,
                                       outcome=audit.Outcome.MINOR_FAILURE, reason=_reason(exc))
                return _error(exc)
            code = logins.pass_second_factor(login, mfa.amr("pwd", method))
        audit.record_for_login(self.event, login, request=request, detail={"method": method})
        # Establish the browser session too, as /auth/login does without MFA.
        django_login(request, login.user, backend="django.contrib.auth.backends.ModelBackend")
        request.session[authorization.AUTH_TIME_KEY] = time.time()
        request.session[authorization.AMR_KEY] = login.amr
        body: dict[str, Any] = {"login": str(login.pk)}
        if code is not None:
            body["code"] = code
        else:
            body["memberships"] = [_membership_summary(m) for m in authorization.memberships_for(
                login.user, login.client)]
        if recovery_codes:
            body["recoveryCodes"] = recovery_codes
        response = JsonResponse(body)
        response["Cache-Control"] = "no-store"
        return response


@method_decorator(csrf_exempt, name="dispatch")
class VerifyView(_PendingLoginView):
    def second_factor(self, login: Login, token: Any) -> tuple[str, list[str]]:
        return mfa.verify_second_factor(login.user, token), []


@method_decorator(csrf_exempt, name="dispatch")
class LoginEnrollView(_PendingLoginView):
    event = audit.EventType.MFA_ENROLLED

    def second_factor(self, login: Login, token: Any) -> tuple[str, list[str]]:
        if mfa.is_enrolled(login.user):
            raise mfa.MfaError("Already enrolled")
        return "otp", mfa.confirm_totp(login.user, token)


def _bearer_user(request: HttpRequest) -> Any:
    login = user_login(request)
    return login if isinstance(login, HttpResponse) else login.user


class StatusView(View):
    """``GET /auth/mfa/status``: ``{enrolled: true}``, or the QR code of an enrollment to confirm."""

    http_method_names = ["get", "options"]

    def get(self, request: HttpRequest) -> HttpResponse:
        user = _bearer_user(request)
        if isinstance(user, HttpResponse):
            return user
        if mfa.is_enrolled(user):
            body: dict[str, Any] = {"enrolled": True, "methods": sorted(mfa.factors(user)),
                                    "recoveryCodesLeft": mfa.remaining_recovery_codes(user)}
        else:
            enrollment = mfa.start_totp(user)
            body = {"enrolled": False, "enrollUri": enrollment.uri, "enrollQrCode": enrollment.qr_code}
        response = JsonResponse(body)
        response["Cache-Control"] = "no-store"
        return response


class _BearerCodeView(View, ABC):
    """A change to the caller's own authenticator app, proven with a current code (Medplum's shape)."""

    http_method_names = ["post", "options"]
    event = ""

    @abstractmethod
    def act(self, user: Any, token: Any) -> dict[str, Any]:
        """Make the change with ``token``: fields to add to the answer, or :class:`MfaError`."""

    def post(self, request: HttpRequest) -> HttpResponse:
        user = _bearer_user(request)
        if isinstance(user, HttpResponse):
            return user
        data = _json_body(request)
        if data is None or not data.get("token"):
            return outcome("Missing token", expression="token")
        try:
            extra = self.act(user, data["token"])
        except mfa.MfaError as exc:
            _record_failure(request, user, exc)
            return _error(exc)
        audit.record(self.event, request=request, user=user, subject=f"User/{user.pk}", detail={"method": "totp"})
        response = JsonResponse({**ALL_OK, **extra})
        response["Cache-Control"] = "no-store"
        return response


@method_decorator(csrf_exempt, name="dispatch")
class EnrollView(_BearerCodeView):
    """``POST /auth/mfa/enroll {token}``: confirm the authenticator app of ``/auth/mfa/status``; the
    answer adds the new ``recoveryCodes`` (shown once)."""

    event = audit.EventType.MFA_ENROLLED

    def act(self, user: Any, token: Any) -> dict[str, Any]:
        return {"recoveryCodes": mfa.confirm_totp(user, token)}


@method_decorator(csrf_exempt, name="dispatch")
class DisableView(_BearerCodeView):
    """``POST /auth/mfa/disable {token}``: a current code removes the authenticator app."""

    event = audit.EventType.MFA_DISABLED

    def act(self, user: Any, token: Any) -> dict[str, Any]:
        mfa.disable_totp(user, token)
        return {}
