"""The browser side of the code flow: pending requests, prompt, max_age, profile and consent.

The authorization endpoint validates a request with oauthlib, parks it in the session under a
random id and walks the user through sign-in, profile choice and consent. Each step ends in
:func:`resume`, which either asks for the next page or completes the request through
oauthlib (which creates the code). OIDC Core §3.1.2: ``prompt`` (none/login/consent),
``max_age``, ``id_token_hint``, ``login_hint``; RFC 9207: ``iss`` on every response.
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from oauthlib.oauth2.rfc6749 import errors

from . import audit, dpop, lookups, par, tokens
from . import launch as launch_utils
from . import scopes as scope_utils
from .access import login_inputs
from .conf import auth_settings
from .models import ClientApplication, Consent, ProjectMembership
from .queries import one_or_none
from .server import get_server
from .validators import add_params

SESSION_KEY = "medplum_authz"
AUTH_TIME_KEY = "medplum_auth_time"
#: RFC 8176 ``amr`` of the session's sign-in (``pwd``, ``pwd otp mfa`` …), copied onto its logins.
AMR_KEY = "medplum_auth_amr"
PENDING_SECONDS = 1800
MAX_PENDING = 10
PROMPT_VALUES = frozenset({"none", "login", "consent", "select_account"})


def authorize_uri(params: dict[str, str]) -> str:
    return f"{auth_settings.ISSUER}/oauth2/authorize?{urlencode(params)}"


def error_page(request: HttpRequest, title: str, description: str, status: int = 400) -> HttpResponse:
    """Fatal errors never redirect (RFC 6749 §4.1.2.1): unknown client, unregistered redirect URI."""
    return render(request, "medplum_auth/error.html", {"title": title, "description": description}, status=status)


#: ``error_description`` for errors oauthlib leaves without one (RFC 6749 §4.1.2.1, §5.2).
DEFAULT_DESCRIPTIONS = {
    "invalid_client": "Client authentication failed.",
    "invalid_grant": "The grant is invalid, expired, revoked or was issued to another client.",
    "invalid_request": "The request is missing a parameter or is malformed.",
    "invalid_scope": "The requested scope is invalid or exceeds the scope granted.",
    "unauthorized_client": "This client may not use this grant type.",
    "unsupported_grant_type": "Unsupported grant_type.",
    "unsupported_response_type": "Unsupported response_type: only code is supported.",
    "access_denied": "The request was denied.",
}


def error_redirect(redirect_uri: str, error: str, description: str, state: str | None) -> HttpResponse:
    description = description or DEFAULT_DESCRIPTIONS.get(error, error)
    params = {"error": error, "error_description": description, "state": state or None,
              "iss": auth_settings.ISSUER}
    return HttpResponseRedirect(add_params(redirect_uri, params))


def record_denied(request: HttpRequest, client: ClientApplication | None, reason: str, *,
                  membership: ProjectMembership | None = None, scopes: list[str] | None = None) -> None:
    """An authorization request of the signed-in user that ends without a code (RFC 6749 §4.1.2.1)."""
    user = request.user if request.user.is_authenticated else None
    audit.record(audit.EventType.AUTHORIZATION_DENIED, request=request,
                 project=client.project_id if client is not None else None, user=user, membership=membership,
                 client=client, subject=client.reference if client is not None else "",
                 subject_display=client.name if client is not None else "", outcome=audit.Outcome.MINOR_FAILURE,
                 reason=reason, detail={"scopes": scopes} if scopes else None,
                 message=f"authorization denied reason={reason}")


def start(request: HttpRequest, params: dict[str, str]) -> HttpResponse:
    """Validate a new authorization request (GET query or POST form alike) and begin.

    With a PAR ``request_uri`` (RFC 9126 §4) the pushed parameters are the request; the others
    sent through the browser are ignored, except ``client_id``, which must be the pushing client's.
    Any other ``request_uri`` (a request object by reference) is ``request_uri_not_supported``.
    """
    pushed = params.get("request_uri", "").startswith(par.REQUEST_URI_PREFIX)
    if pushed:
        taken = par.take(params.get("client_id", ""), params["request_uri"])
        if taken is None:
            return error_page(request, "Invalid request", "The request_uri is unknown, expired or already used, "
                              "or was pushed by another client.")
        params = taken
    server = get_server()
    try:
        requested, info = server.validate_authorization_request(authorize_uri(params), "GET", None, {})
    except errors.FatalClientError as exc:
        return error_page(request, "Invalid request", _fatal_message(exc))
    except errors.OAuth2Error as exc:
        description = _redirect_message(exc, params)
        if not exc.redirect_uri:
            return error_page(request, "Invalid request", description)
        return error_redirect(exc.redirect_uri, exc.error, description, params.get("state"))

    redirect_uri, state = info["redirect_uri"], params.get("state")
    problem = _check_extra_parameters(params)
    if problem:
        return error_redirect(redirect_uri, *problem, state)
    # The client row oauthlib's validation just loaded (and found active); the request is parked
    # in the session only if it needs a page, so a signed-in silent authorization writes nothing.
    client = getattr(info.get("request"), "client", None)
    if not isinstance(client, ClientApplication) or client.client_id != info["client_id"]:
        client = client_for({"client_id": info["client_id"]})
    if not pushed and par.required(client):
        return error_redirect(redirect_uri, "invalid_request",
                              "This client must push its authorization request to the PAR endpoint (RFC 9126).", state)
    pending = {
        "params": params,
        "redirect_uri": redirect_uri,
        "scopes": list(requested),
        "client_id": info["client_id"],
        "created": int(time.time()),
        "started": time.time(),
    }
    if client is not None and "launch" in params and launch_utils.usable_launch(params["launch"], client) is None:
        return error_redirect(redirect_uri, "invalid_request", "Invalid launch", state)
    return _advance(request, None, pending, client)


def check_pushed(params: dict[str, str]) -> tuple[str, str] | None:
    """``(error, description)`` if ``params`` would be refused at the authorization endpoint.

    RFC 9126 §2.1: the PAR endpoint validates a pushed request as the authorization endpoint does
    and answers errors itself (§2.3), so nothing invalid is stored (nor NUL, which PostgreSQL's
    JSON cannot hold).
    """
    if any("\x00" in text for item in params.items() for text in item):
        return "invalid_request", "Parameters must not contain NUL characters."
    try:
        get_server().validate_authorization_request(authorize_uri(params), "GET", None, {})
    except errors.FatalClientError as exc:
        return "invalid_request", _fatal_message(exc)
    except errors.OAuth2Error as exc:
        return exc.error, _redirect_message(exc, params)
    return _check_extra_parameters(params)


def _redirect_message(exc: errors.OAuth2Error, params: dict[str, str]) -> str:
    """oauthlib's description, but for PKCE a message that says what to send (S256, RFC 7636 §4.4.1).

    oauthlib's is "Transform algorithm not supported." for ``plain`` and for a missing method (it
    defaults to ``plain``). The client's value is not echoed (RFC 6749 §4.1.2.1 limits the characters).
    """
    if isinstance(exc, errors.UnsupportedCodeChallengeMethodError):
        if params.get("code_challenge_method"):
            return "Unsupported code_challenge_method: only S256 is supported."
        return "Missing code_challenge_method: only S256 is supported."
    return exc.description


def _fatal_message(exc: errors.OAuth2Error) -> str:
    if isinstance(exc, errors.MissingClientIdError | errors.InvalidClientIdError):
        return "Client not found: the client_id is missing, unknown or disabled."
    if isinstance(exc, errors.MissingRedirectURIError):
        return "Missing redirect URI: this client has several registered redirect URIs; send redirect_uri."
    if isinstance(exc, errors.InvalidRedirectURIError | errors.MismatchingRedirectURIError):
        return "Invalid redirect URI: it must match a registered redirect URI exactly."
    return exc.description or "The authorization request is malformed."


def _check_extra_parameters(params: dict[str, str]) -> tuple[str, str] | None:
    if "request" in params or "request_uri" in params:
        error = "request_not_supported" if "request" in params else "request_uri_not_supported"
        return error, "Request objects are not supported."
    prompt = set(params.get("prompt", "").split())
    if not prompt <= PROMPT_VALUES:
        return "invalid_request", "Unknown prompt value."
    if "none" in prompt and len(prompt) > 1:
        return "invalid_request", "prompt=none cannot be combined with other values."
    max_age = params.get("max_age")
    if max_age is not None and not (max_age.isdigit() and len(max_age) < 10):
        return "invalid_request", "max_age must be a non-negative integer."
    aud = params.get("aud")
    if aud is not None and aud.rstrip("/") != auth_settings.fhir_base_url:
        return "invalid_request", "Invalid audience: aud must be this server's FHIR base URL."
    if "dpop_jkt" in params and not dpop.valid_thumbprint(params["dpop_jkt"]):
        return "invalid_request", "dpop_jkt must be the base64url SHA-256 thumbprint of a JWK (RFC 9449 §10)."
    return None


def _store(request: HttpRequest, pending: dict[str, Any]) -> str:
    now = int(time.time())
    store = {k: v for k, v in request.session.get(SESSION_KEY, {}).items() if now - v["created"] < PENDING_SECONDS}
    while len(store) >= MAX_PENDING:
        store.pop(min(store, key=lambda k: store[k]["created"]))
    rid = secrets.token_urlsafe(16)
    store[rid] = pending
    request.session[SESSION_KEY] = store
    return rid


def load(request: HttpRequest, rid: str | None) -> dict[str, Any] | None:
    pending = request.session.get(SESSION_KEY, {}).get(rid or "")
    if pending and time.time() - pending["created"] < PENDING_SECONDS:
        return pending
    return None


def save(request: HttpRequest, rid: str, pending: dict[str, Any]) -> None:
    store = request.session.get(SESSION_KEY, {})
    store[rid] = pending
    request.session[SESSION_KEY] = store


def discard(request: HttpRequest, rid: str) -> None:
    store = request.session.get(SESSION_KEY, {})
    store.pop(rid, None)
    request.session[SESSION_KEY] = store


def expired_page(request: HttpRequest) -> HttpResponse:
    return error_page(request, "Sign-in request expired",
                      "This sign-in request is no longer valid. Return to the application and try again.")


def client_for(pending: dict[str, Any]) -> ClientApplication | None:
    client = lookups.client_by_client_id.get(pending["client_id"])
    return client if client and client.is_active else None


def memberships_for(user: Any, client: ClientApplication) -> list[ProjectMembership]:
    return list(ProjectMembership.objects.filter(user=user, project=client.project_id, active=True)
                .order_by("profile_type", "profile_display"))


def chosen_membership(user: Any, client: ClientApplication, pending: dict[str, Any]) -> ProjectMembership | None:
    """The profile the pending request goes on with: the one chosen, or the user's only one."""
    memberships = memberships_for(user, client)
    chosen = next((m for m in memberships if str(m.pk) == pending.get("membership")), None)
    return chosen or (memberships[0] if len(memberships) == 1 else None)


def _hint_subject(hint: str) -> str | None:
    try:
        return str(tokens.decode(hint, tokens.ID_TOKEN_TYPE, verify_exp=False).get("sub"))
    except tokens.InvalidToken:
        return None


MFA_ACR = "mfa"


def wants_mfa(pending: dict[str, Any]) -> bool:
    """OIDC Core §3.1.2.1 ``acr_values``: the client asked for a sign-in with a second factor."""
    return MFA_ACR in str(pending["params"].get("acr_values", "")).split()


def needs_sign_in(request: HttpRequest, pending: dict[str, Any]) -> bool:
    params = pending["params"]
    if not request.user.is_authenticated:
        return True
    if wants_mfa(pending) and "mfa" not in str(request.session.get(AMR_KEY, "")).split():
        return True  # step up: this session's sign-in had no second factor
    prompt = set(params.get("prompt", "").split())
    auth_time = request.session.get(AUTH_TIME_KEY, 0)
    if "login" in prompt and auth_time < pending["started"]:
        return True
    max_age = params.get("max_age")
    # A sign-in during this very request satisfies max_age (else max_age=0 would loop, and a
    # short max_age would expire while the user is on the profile or consent page).
    if max_age is not None and auth_time < pending["started"] and time.time() - auth_time > int(max_age):
        return True
    hint = params.get("id_token_hint")
    return bool(hint) and _hint_subject(hint) != str(request.user.pk)


def resume(request: HttpRequest, rid: str) -> HttpResponse:
    """Ask for the next missing step, or complete the authorization."""
    pending = load(request, rid)
    if pending is None:
        return expired_page(request)
    return _advance(request, rid, pending, client_for(pending))


def _advance(request: HttpRequest, rid: str | None, pending: dict[str, Any],
             client: ClientApplication | None) -> HttpResponse:
    """:func:`resume` for a request parked under ``rid``, or (``rid`` ``None``) a new one that is
    parked only when a page must be shown."""
    params, redirect_uri = pending["params"], pending["redirect_uri"]
    state = params.get("state")
    prompt = set(params.get("prompt", "").split())

    def end() -> None:
        if rid is not None:
            discard(request, rid)

    def page(name: str) -> HttpResponse:
        parked = rid if rid is not None else _store(request, pending)
        return HttpResponseRedirect(f"{reverse(name)}?{urlencode({'rid': parked})}")

    if client is None:
        end()
        return error_page(request, "Invalid request", "Client not found: the client is unknown or disabled.")

    if needs_sign_in(request, pending):
        if "none" in prompt:
            end()
            return error_redirect(redirect_uri, "login_required", "The user must sign in.", state)
        return page("medplum_auth:signin")

    memberships = memberships_for(request.user, client)
    if not memberships:
        end()
        record_denied(request, client, "no_profile", scopes=pending["scopes"])
        return error_redirect(redirect_uri, "access_denied", "The user has no active profile in this project.",
                              state)
    membership = next((m for m in memberships if str(m.pk) == pending.get("membership")), None)
    if membership is None:
        if len(memberships) == 1:
            membership = memberships[0]
        elif "none" in prompt:
            end()
            record_denied(request, client, "account_selection_required", scopes=pending["scopes"])
            return error_redirect(redirect_uri, "account_selection_required", "The user must choose a profile.",
                                  state)
        else:
            return page("medplum_auth:profile")

    if "launch" in params:  # SMART EHR launch: checked at start, again now the user is known
        launch = launch_utils.usable_launch(params["launch"], client)
        if launch is None or not launch_utils.launch_allowed(launch, request.user, membership):
            end()
            record_denied(request, client, "invalid_launch", membership=membership, scopes=pending["scopes"])
            return error_redirect(redirect_uri, "invalid_request", "Invalid launch", state)
    elif launch_utils.wants_patient_picker(pending["scopes"], membership) and \
            pending.get("patient_for") != str(membership.pk):
        if "none" in prompt:
            end()
            record_denied(request, client, "interaction_required", membership=membership, scopes=pending["scopes"])
            return error_redirect(redirect_uri, "interaction_required", "The user must choose a patient.", state)
        return page("medplum_auth:patient")

    granted = pending.get("granted")
    if granted is None:
        offered = grantable(pending["scopes"], unreachable_scopes(client, membership, pending["scopes"]))
        if needs_consent(request.user, client, offered, prompt):
            if "none" in prompt:
                end()
                record_denied(request, client, "consent_required", membership=membership, scopes=pending["scopes"])
                return error_redirect(redirect_uri, "consent_required", "The user must approve the request.", state)
            return page("medplum_auth:consent")
        granted = offered
    return complete(request, rid, pending, membership, granted, client)


def unreachable_scopes(client: ClientApplication, membership: ProjectMembership, scopes: list[str]) -> list[str]:
    """The requested resource scopes the client's access policy allows nothing of for this member."""
    return login_inputs(membership=membership, client=client).unreachable_scopes(scopes)


def withheld_all(requested: list[str], granted: list[str]) -> bool:
    """The request asked for SMART resource scopes and the user granted none of them."""
    def has_resource_scope(scopes: list[str]) -> bool:
        return any(scope_utils.parse_resource_scope(s) for s in scopes)

    return has_resource_scope(requested) and not has_resource_scope(granted)


def grantable(scopes: list[str], unreachable: list[str]) -> list[str]:
    """``scopes`` without the ``unreachable`` ones, so the token never lists what the app cannot use.

    Unless none of the SMART resource scopes would be left: a token without any is governed by the
    policies alone (``medplum_auth.access``), which would grant more than the scopes asked for.
    """
    kept = [s for s in scopes if s not in unreachable]
    if unreachable and not any(scope_utils.parse_resource_scope(s) for s in kept):
        return scopes
    return kept


def needs_consent(user: Any, client: ClientApplication, requested: list[str], prompt: set[str]) -> bool:
    if "consent" in prompt:
        return True
    if set(requested) <= {"openid"}:
        return False
    consent = one_or_none(Consent.objects.filter(user=user, client=client))
    return consent is None or not set(requested) <= set(consent.scope.split())


def record_consent(user: Any, client: ClientApplication, granted: list[str]) -> None:
    Consent.objects.update_or_create(user=user, client=client, defaults={"scope": " ".join(granted)})


def complete(request: HttpRequest, rid: str | None, pending: dict[str, Any], membership: ProjectMembership,
             granted: list[str], client: ClientApplication | None = None) -> HttpResponse:
    """Let oauthlib re-validate the original request and issue the code (RFC 6749 §4.1.2).

    ``client``, loaded earlier in this HTTP request, spares the validator a second lookup; it
    still checks that the client is active and is the one the request names.
    """
    credentials: dict[str, Any] = {
        "user": request.user,
        "membership": membership,
        "auth_time": _auth_time(request),
        "amr": request.session.get(AMR_KEY) or "pwd",
        "resource_scopes_withheld": withheld_all(pending["scopes"], granted),
        "remote_addr": audit.client_address(request),
        "user_agent": request.META.get("HTTP_USER_AGENT", ""),
        "dpop_jkt": pending["params"].get("dpop_jkt", ""),  # RFC 9449 §10: binds the code to a DPoP key
    }
    if client is not None:
        credentials["client"] = client
    if rid is not None:
        discard(request, rid)
    context = _launch_context(pending, membership, granted, client)
    if context is None:
        return error_redirect(pending["redirect_uri"], "invalid_request", "Invalid launch",
                              pending["params"].get("state"))
    credentials.update(context)
    try:
        headers, _body, _status = get_server().create_authorization_response(
            authorize_uri(pending["params"]), "GET", None, {}, scopes=granted, credentials=credentials)
    except errors.FatalClientError as exc:
        return error_page(request, "Invalid request", _fatal_message(exc))
    except errors.OAuth2Error as exc:
        record_denied(request, client or client_for(pending), exc.error, membership=membership, scopes=granted)
        return error_redirect(pending["redirect_uri"], exc.error, exc.description, pending["params"].get("state"))
    location = add_params(headers["Location"], {"iss": auth_settings.ISSUER})
    return HttpResponseRedirect(location)


def _launch_context(pending: dict[str, Any], membership: ProjectMembership, granted: list[str],
                    client: ClientApplication | None) -> dict[str, Any] | None:
    """The login's SMART launch context (credentials for the validator); ``None``: invalid launch.

    An EHR launch is bound (and used up) only when a launch scope was granted; the standalone
    picker's patient only with ``launch/patient``.
    """
    launch_scopes = any(s == "launch" or s.startswith("launch/") for s in granted)
    if "launch" in pending["params"]:
        if not launch_scopes:
            return {}
        launch = launch_utils.claim_launch(pending["params"]["launch"], client or client_for(pending))
        if launch is None:
            return None
        return {"medplum_launch": launch, "launch_patient": launch.patient, "launch_encounter": launch.encounter}
    if (pending.get("patient") and pending.get("patient_for") == str(membership.pk) and "launch/patient" in granted
            and launch_utils.wants_patient_picker(granted, membership)):
        return {"launch_patient": pending["patient"]}
    return {}


def _auth_time(request: HttpRequest) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(request.session.get(AUTH_TIME_KEY) or time.time(), tz=UTC)


def scope_rows(requested: list[str], unreachable: list[str] | tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Consent page rows: plain-words description; ``openid`` cannot be deselected; a scope the
    client's access policy allows nothing of is shown as not available, without a checkbox."""
    return [{"scope": s, "description": scope_utils.describe(s), "required": s == "openid",
             "available": s not in unreachable} for s in requested]
