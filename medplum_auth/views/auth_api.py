"""Medplum's JSON login API (``/auth/login``, ``/auth/profile``, ``/auth/me``), for embedded
login in custom UIs and for ``@medplum/core``. Errors are 400 FHIR OperationOutcomes."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.contrib.auth import login as django_login
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters

from .. import audit, authorization, jsonbody, logins, mfa, passwords, signin, throttle
from ..access import login_inputs
from ..lookups import client_by_client_id
from ..models import Login, ProjectMembership
from ..scopes import is_supported, split
from ..signin import THROTTLED, authenticate_email
from .password import JsonResponseThen
from .userinfo import bearer_context

PROFILE_SELECTION_SECONDS = 600


def outcome(text: str, status: int = 400, code: str = "invalid", expression: str | None = None) -> JsonResponse:
    issue: dict[str, Any] = {"severity": "error", "code": code, "details": {"text": text}}
    if expression:
        issue["expression"] = [expression]
    response = JsonResponse({"resourceType": "OperationOutcome", "issue": [issue]}, status=status)
    response["Cache-Control"] = "no-store"
    return response


ALL_OK = {"resourceType": "OperationOutcome", "id": "allok",
          "issue": [{"severity": "information", "code": "informational", "details": {"text": "All OK"}}]}


def too_many(text: str, seconds: int) -> JsonResponse:
    """429 OperationOutcome (issue type ``throttled``) with ``Retry-After``."""
    response = outcome(text, status=429, code="throttled")
    response["Retry-After"] = str(seconds)
    return response


# @medplum/core sends every request body as application/fhir+json (startLogin included), as
# Medplum's server accepts; neither type is CORS-safelisted, so both need a preflight.
JSON_CONTENT_TYPES = frozenset({"application/json", "application/fhir+json"})


def _json_body(request: HttpRequest) -> dict[str, Any] | None:
    """JSON only: a cross-site form cannot send it without a CORS preflight (no login CSRF)."""
    if request.content_type not in JSON_CONTENT_TYPES:
        return None
    try:
        data = jsonbody.loads(request.body or b"{}")
    except (ValueError, RequestDataTooBig):  # too big: over DATA_UPLOAD_MAX_MEMORY_SIZE
        return None
    return data if isinstance(data, dict) else None


def user_login(request: HttpRequest, forbidden: str = "Forbidden: a user's token is required") -> Any:
    """The login of the request's Bearer token when a user signed in (401 without a valid token;
    403 with ``forbidden`` for a client's own ``client_credentials`` token)."""
    context = bearer_context(request)
    if isinstance(context, HttpResponse):
        return context
    if not context.login.user_id:
        return outcome(forbidden, status=403, code="forbidden")
    return context.login.load()


def _membership_summary(m: ProjectMembership) -> dict[str, Any]:
    return {
        "id": str(m.pk),
        "project": {"reference": m.project.reference, "display": m.project.name},
        "profile": {"reference": m.profile, "display": m.profile_display},
    }


@method_decorator([csrf_exempt, sensitive_post_parameters("password")], name="dispatch")
class LoginView(View):
    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        data = _json_body(request)
        if data is None:
            return outcome("Request body must be a JSON object (Content-Type: application/json).")
        email, password = data.get("email"), data.get("password")
        if not isinstance(email, str) or not email:
            return outcome("Missing email", expression="email")
        if not isinstance(password, str) or not password:
            return outcome("Missing password", expression="password")
        client = client_by_client_id.get(str(data.get("clientId") or ""))
        if client is None or not client.is_active:
            return outcome("Invalid clientId" if data.get("clientId") else "Missing clientId", expression="clientId")
        if data.get("projectId") and str(data["projectId"]) != str(client.project_id):
            return outcome("Invalid projectId", expression="projectId")
        origin = request.META.get("HTTP_ORIGIN")
        if origin and client.allowed_origins and origin not in client.allowed_origins.split():
            return outcome("Invalid origin")
        scope = data.get("scope") or "openid"
        if not isinstance(scope, str) or not all(is_supported(s) for s in split(scope)):
            return outcome("Invalid scope", expression="scope")
        challenge, method = data.get("codeChallenge") or "", data.get("codeChallengeMethod") or ""
        if not client.pkce_optional or challenge or method:
            if not challenge:
                return outcome("Missing codeChallenge", expression="codeChallenge")
            if method != "S256":
                return outcome("Invalid codeChallengeMethod: only S256 is supported", expression="codeChallengeMethod")
        user, error = authenticate_email(email, password, audit.client_address(request))
        if user is None:
            audit.record_sign_in(request, email=email, user=None, client=client, throttled=error == THROTTLED)
            return outcome(error or "Email or password is invalid")
        memberships = authorization.memberships_for(user, client)
        resource_type = data.get("resourceType")
        if resource_type:
            memberships = [m for m in memberships if m.profile_type == resource_type]
        if not memberships:
            audit.record_sign_in(request, email=email, user=user, client=client, reason="no_profile")
            return outcome("User not found")
        audit.record_sign_in(request, email=email, user=user, client=client)

        needs_mfa = mfa.required_for(user, client.project)
        if not needs_mfa:
            # Establish the browser session too, so /oauth2/authorize?prompt=none succeeds later
            # (with a second factor due, /auth/mfa/verify does it).
            django_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            request.session[authorization.AUTH_TIME_KEY] = time.time()
        login, code = logins.create_login(
            user=user, client=client, membership=memberships[0] if len(memberships) == 1 else None,
            scope=" ".join(split(scope)), auth_time=timezone.now(), nonce=str(data.get("nonce") or ""),
            code_challenge=challenge, code_challenge_method=method if challenge else "",
            remote_addr=audit.client_address(request), user_agent=request.META.get("HTTP_USER_AGENT", ""),
            awaiting_mfa=needs_mfa,
        )
        if needs_mfa:
            return mfa_step(login, user)
        if code is not None:
            return JsonResponse({"login": str(login.pk), "code": code})
        return JsonResponse({"login": str(login.pk), "memberships": [_membership_summary(m) for m in memberships]})


def mfa_step(login: Login, user: Any) -> JsonResponse:
    """``/auth/login``'s answer when a second factor is due: verify, or enroll first."""
    body: dict[str, Any] = {"login": str(login.pk)}
    enrolled = mfa.factors(user)
    if enrolled:
        body.update(mfaRequired=True, mfaMethods=sorted({"otp": "totp", "hwk": "webauthn"}[f] for f in enrolled))
    else:
        enrollment = mfa.start_totp(user)
        body.update(mfaEnrollRequired=True, enrollUri=enrollment.uri, enrollQrCode=enrollment.qr_code,
                    allowedMfaMethods=["totp"])
    response = JsonResponse(body)
    response["Cache-Control"] = "no-store"
    return response


@method_decorator(csrf_exempt, name="dispatch")
class ProfileView(View):
    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        data = _json_body(request)
        if data is None:
            return outcome("Request body must be a JSON object (Content-Type: application/json).")
        with transaction.atomic():
            login = (Login.objects.select_for_update().select_related("client", "project")
                     .filter(pk=_uuid_or_none(data.get("login"))).first())
            fresh = login and login.created > timezone.now() - timedelta(seconds=PROFILE_SELECTION_SECONDS)
            if not login or not fresh or login.revoked_at or login.granted_at or login.membership_id \
                    or login.awaiting_mfa:
                return outcome("Invalid login", expression="login")
            membership = ProjectMembership.objects.select_related("project").filter(
                pk=_uuid_or_none(data.get("profile")), user=login.user_id, project=login.project_id, active=True,
            ).first()
            if membership is None:
                return outcome("Invalid profile", expression="profile")
            code = logins.issue_code(login, membership)
        return JsonResponse({"login": str(login.pk), "code": code})


def _uuid_or_none(value: Any) -> str | None:
    import uuid

    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def profile_resource(membership: ProjectMembership) -> dict[str, Any]:
    """The profile resource as ``/auth/me`` returns it (name and email from the user)."""
    user = membership.user
    resource: dict[str, Any] = {"resourceType": membership.profile_type, "id": membership.profile_id}
    if user.first_name or user.last_name:
        resource["name"] = [{"given": [user.first_name] if user.first_name else [], "family": user.last_name}]
    if user.email:
        resource["telecom"] = [{"system": "email", "value": user.email}]
    return resource


class MeView(View):
    """``GET /auth/me`` (Medplum ``SessionDetails``): what ``@medplum/core`` loads after sign-in."""

    http_method_names = ["get", "options"]

    def get(self, request: HttpRequest) -> HttpResponse:
        context = bearer_context(request)
        if isinstance(context, HttpResponse):
            return context
        login = context.login.load()  # the model: the description fields and the profile's resource
        membership = login.membership
        project = login.project
        body: dict[str, Any] = {
            "project": {"resourceType": "Project", "id": str(project.pk), "name": project.name,
                        "description": project.description, "superAdmin": False, "strictMode": True},
            "config": {"resourceType": "UserConfiguration", "menu": []},
        }
        if login.user_id:
            body["user"] = {"resourceType": "User", "id": str(login.user_id), "email": login.user.email}
        if membership is not None:
            body["membership"] = {
                "resourceType": "ProjectMembership", "id": str(membership.pk),
                "user": {"reference": f"User/{login.user_id}"},
                "profile": {"reference": membership.profile, "display": membership.profile_display},
                "admin": membership.admin,
            }
            body["profile"] = profile_resource(membership)
            body["accessPolicy"] = effective_policy(membership, login.client)
        elif not login.user_id:
            # A client acting for itself (client_credentials): Medplum's profile is the ClientApplication,
            # and @medplum/core needs one (refreshProfile reads profile.id after startClientLogin).
            client = login.client
            body["membership"] = {
                "resourceType": "ProjectMembership",
                "user": {"reference": client.reference, "display": client.name},
                "profile": {"reference": client.reference, "display": client.name},
                "admin": False,
            }
            body["profile"] = {"resourceType": "ClientApplication", "id": client.client_id, "name": client.name,
                               **({"description": client.description} if client.description else {})}
            body["accessPolicy"] = {"resourceType": "AccessPolicy",
                                    "resource": login_inputs(client=client).document()}
        response = JsonResponse(body)
        response["Cache-Control"] = "no-store"
        return response


def effective_policy(membership: ProjectMembership, client: Any = None) -> dict[str, Any]:
    """The login's policy with its parameters substituted (no policy means full access); through a
    client with a policy of its own, the rules both policies allow (``medplum_auth.access``)."""
    return {"resourceType": "AccessPolicy", "resource": login_inputs(membership=membership, client=client).document()}


@method_decorator(csrf_exempt, name="dispatch")
class LaunchView(View):
    """``POST /auth/launch``: create a SMART EHR launch context (Medplum's ``$smart-launch``).

    Bearer token of a project admin or a Practitioner member; body
    ``{"clientId", "patient", "encounter"?}`` (references or ids). Answers
    ``{"launch": <id>, "url": "<launch_uri>?iss=<FHIR base>&launch=<id>"}``; the launch is single
    use, for that client, within ``LAUNCH_LIFETIME`` seconds.
    """

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        from django.core.exceptions import ValidationError

        from .. import services
        from ..launch import launch_url

        context = bearer_context(request)
        if isinstance(context, HttpResponse):
            return context
        membership = context.login.membership if context.login.membership_id else None
        if membership is None or not (membership.admin or membership.profile_type == "Practitioner"):
            return outcome("Forbidden: only project admins and practitioners can launch apps", status=403,
                           code="forbidden")
        data = _json_body(request)
        if data is None:
            return outcome("Request body must be a JSON object (Content-Type: application/json).")
        client = client_by_client_id.get(str(data.get("clientId") or ""))
        if client is None or client.project_id != context.login.project_id:
            return outcome("Invalid clientId" if data.get("clientId") else "Missing clientId", expression="clientId")
        patient, encounter = _reference(data.get("patient")), _reference(data.get("encounter"))
        if not patient:
            return outcome("Missing patient", expression="patient")
        try:
            launch = services.create_launch(client, patient, encounter=encounter or None,
                                            project=client.project, created_by=context.login.user_model)
        except ValidationError as exc:
            field, messages = next(iter(exc.message_dict.items()))
            return outcome(" ".join(messages), expression="clientId" if field == "client" else field)
        response = JsonResponse({"launch": str(launch.pk), "url": launch_url(launch)}, status=201)
        response["Cache-Control"] = "no-store"
        return response


def _reference(value: Any) -> Any:
    """A reference string, an id, or a FHIR ``Reference`` object's ``reference``."""
    return value.get("reference") if isinstance(value, dict) else value


def _strings(data: dict[str, Any], *names: str) -> JsonResponse | list[str]:
    """The named non-empty string fields, or the 400 for the first one missing."""
    values = []
    for name in names:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            return outcome(f"Missing {name}", expression=name)
        values.append(value)
    return values


def _password_problems(password: str, user: Any, field: str) -> JsonResponse | None:
    """Django's ``AUTH_PASSWORD_VALIDATORS`` as a 400 OperationOutcome on ``field``."""
    if "\x00" in password:
        return outcome("Password must not contain NUL characters", expression=field)
    try:
        validate_password(password, user)
    except ValidationError as exc:
        return outcome(" ".join(exc.messages), expression=field)
    return None


@method_decorator(csrf_exempt, name="dispatch")
class ResetPasswordView(View):
    """``POST /auth/resetpassword`` ``{email, projectId?, recaptchaToken?}`` (Medplum): email a link.

    Always 200 ``allOk`` for a well-formed email, known or not, with the lookup done before the
    answer and the email sent after it (no difference in answer or timing). ``projectId`` and
    ``recaptchaToken`` are accepted and ignored (users are not project-scoped here; no reCAPTCHA).
    Requests are throttled per email and per client address (429 ``throttled``).
    """

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        data = _json_body(request)
        if data is None:
            return outcome("Request body must be a JSON object (Content-Type: application/json).")
        email = data.get("email")
        if not isinstance(email, str) or "@" not in email or len(email) > 254 or "\x00" in email:
            return outcome("Valid email address is required", expression="email")
        counters = passwords.reset_counters(email, audit.client_address(request))
        wait = throttle.retry_after(counters)
        if wait is not None:
            return too_many("Too many password reset requests. Try again later.", wait)
        throttle.record_failure(counters)
        response = JsonResponseThen(ALL_OK, after=passwords.request_reset(email, request))
        response["Cache-Control"] = "no-store"
        return response


@method_decorator([csrf_exempt, sensitive_post_parameters()], name="dispatch")
class SetPasswordView(View):
    """``POST /auth/setpassword`` ``{id, secret, password}`` (Medplum): the emailed link's ``id`` and
    ``secret`` and a new password. Revokes every login of the user. One 400 for an unknown,
    expired or used link."""

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        data = _json_body(request)
        if data is None:
            return outcome("Request body must be a JSON object (Content-Type: application/json).")
        values = _strings(data, "id", "secret", "password")
        if isinstance(values, JsonResponse):
            return values
        link_id, secret, password = values
        user = passwords.check_link(link_id, secret)
        if user is None:
            return outcome("Invalid, expired or already used link", expression="secret")
        problems = _password_problems(password, user, "password")
        if problems is not None:
            return problems
        passwords.set_password(user, password, reason="password_reset")
        return JsonResponse(ALL_OK)


@method_decorator([csrf_exempt, sensitive_post_parameters()], name="dispatch")
class ChangePasswordView(View):
    """``POST /auth/changepassword`` ``{oldPassword, newPassword}`` with the user's Bearer token
    (Medplum). Every other login of the user is revoked; the calling one stays. A wrong
    ``oldPassword`` counts as a failed sign-in (``SIGNIN_MAX_FAILURES``)."""

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        login = user_login(request, "Forbidden: only a signed-in user can change a password")
        if isinstance(login, HttpResponse):
            return login
        data = _json_body(request)
        if data is None:
            return outcome("Request body must be a JSON object (Content-Type: application/json).")
        values = _strings(data, "oldPassword", "newPassword")
        if isinstance(values, JsonResponse):
            return values
        old, new = values
        user, address = login.user, audit.client_address(request)
        wait = signin.retry_after(user.email, address)
        if wait is not None:
            return too_many(signin.THROTTLED, wait)
        if not user.check_password(old):
            signin.record_failure(user.email, address)
            return outcome("Incorrect password", expression="oldPassword")
        problems = _password_problems(new, user, "newPassword")
        if problems is not None:
            return problems
        passwords.set_password(user, new, reason="password_change", keep_login=login)
        return JsonResponse(ALL_OK)
