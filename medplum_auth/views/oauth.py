"""``/oauth2/authorize`` and ``/oauth2/token``: thin adapters to oauthlib and the flow module."""

from __future__ import annotations

import contextlib
import json

from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from .. import authorization, clientauth, dpop, jsonbody, par, registration, services, throttle
from ..authorization import DEFAULT_DESCRIPTIONS
from ..conf import auth_settings
from ..models import ClientApplication
from ..server import get_server
from .decorators import auth_page

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def _single_values(query: object) -> dict[str, str]:
    return {key: values[-1] for key, values in query.lists()}  # type: ignore[attr-defined]


@method_decorator(csrf_exempt, name="dispatch")  # a POST authorization request comes from another site
@method_decorator(auth_page, name="dispatch")
class AuthorizeView(View):
    """RFC 6749 §4.1.1 / OIDC Core §3.1.2.1: GET and POST authorization requests work alike."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if _has_duplicates(request.GET):
            return authorization.error_page(request, "Invalid request", "Duplicate parameters.")
        return authorization.start(request, _single_values(request.GET))

    def post(self, request: HttpRequest) -> HttpResponse:
        if _has_duplicates(request.POST):
            return authorization.error_page(request, "Invalid request", "Duplicate parameters.")
        params = _single_values(request.POST)
        params.pop("csrfmiddlewaretoken", None)
        return authorization.start(request, params)


def _has_duplicates(query: object) -> bool:
    return any(len(values) > 1 for _key, values in query.lists())  # type: ignore[attr-defined]


@method_decorator(auth_page, name="dispatch")
class ResumeView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return authorization.resume(request, request.GET.get("rid", ""))




def _with_description(body: str, status: int) -> str:
    """oauthlib leaves many ``error_description`` values empty; RFC 6749 §5.2 clients show them."""
    if status < 400:
        return body
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict) and data.get("error") and not data.get("error_description"):
        data["error_description"] = DEFAULT_DESCRIPTIONS.get(data["error"], data["error"])
        return json.dumps(data)
    return body


def _error_code(body: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("error") if isinstance(data, dict) else None


def oauth_error(error: str, description: str, status: int = 400) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def method_not_allowed(allowed: list[str]) -> JsonResponse:
    """405 with ``Allow`` and an RFC 6749 error object, not Django's empty body."""
    response = oauth_error("invalid_request", f"Method not allowed: use {', '.join(allowed)}.", status=405)
    response["Allow"] = ", ".join(allowed)
    return response


class OAuthMethodsMixin:
    """An OAuth endpoint's 405 is :func:`method_not_allowed` (JSON and ``Allow``)."""

    def http_method_not_allowed(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        return method_not_allowed(self._allowed_methods())  # type: ignore[attr-defined]


def dpop_error(exc: dpop.DPoPError) -> JsonResponse:
    """RFC 9449 §5, §8: 400 ``invalid_dpop_proof``, or ``use_dpop_nonce`` with a ``DPoP-Nonce`` to retry with."""
    response = oauth_error(exc.error, exc.description)
    response["Cache-Control"] = "no-store"
    if exc.nonce:
        response["DPoP-Nonce"] = exc.nonce
    return response


def dpop_proof(request: HttpRequest) -> dpop.Proof | None | JsonResponse:
    """The request's verified DPoP proof (``None`` when it sent none), or the error to answer."""
    header = request.META.get("HTTP_DPOP")
    if header is None:
        return None
    try:
        return dpop.verify(header, method=request.method or "POST", uris=dpop.request_uris(request))
    except dpop.DPoPError as exc:
        return dpop_error(exc)


def too_many_failures(seconds: int) -> JsonResponse:
    """429 (RFC 6585 §4) with ``Retry-After``; the body is an RFC 6749 error object.

    ``temporarily_unavailable`` (RFC 6749 §4.1.2.1) is the one OAuth error code that means "try
    again later"; ``invalid_client`` or ``invalid_grant`` would make clients drop credentials or
    refresh tokens that may be fine.
    """
    response = oauth_error("temporarily_unavailable",
                           f"Too many failed requests; retry after {seconds} seconds.", status=429)
    response["Retry-After"] = str(seconds)
    return response


#: Failures the token endpoints throttle (RFC 6749 §5.2); other errors are the client's bugs, not guesses.
COUNTED_ERRORS = frozenset({"invalid_client", "invalid_grant"})


LOCKING_GRANTS = frozenset({"authorization_code", "refresh_token"})
#: The grants the token endpoint serves (``medplum_auth.server``); any other ``grant_type`` is
#: refused here, before oauthlib, which would hand an unknown one to its default grant.
GRANT_TYPES = LOCKING_GRANTS | {"client_credentials"}


@method_decorator(csrf_exempt, name="dispatch")
class TokenView(OAuthMethodsMixin, View):
    """RFC 6749 §3.2, §5: form-encoded POST only; errors per §5.2; ``Cache-Control: no-store``."""

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type != FORM_CONTENT_TYPE:
            return oauth_error("invalid_request", "Unsupported content type: use application/x-www-form-urlencoded.")
        try:
            body = request.body.decode("utf-8")
        except UnicodeDecodeError:
            return oauth_error("invalid_request", "The request body is not valid UTF-8.")
        grant_type = request.POST.get("grant_type")
        if not grant_type:
            return oauth_error("invalid_request", "Missing grant_type.")
        if grant_type not in GRANT_TYPES:
            return oauth_error("unsupported_grant_type",
                               f"Unsupported grant_type: use one of {', '.join(sorted(GRANT_TYPES))}.")
        counters = clientauth.failure_counters(request)
        wait = throttle.retry_after(counters)  # the one cache read of a successful request
        if wait is not None:
            return too_many_failures(wait)
        proof = dpop_proof(request)
        if isinstance(proof, HttpResponse):
            return proof
        # RFC 9449 §5: a proof binds the tokens to its key. oauthlib adds "extra credentials" to the
        # token response (token_type) and hands them to the validator (the key's thumbprint, which
        # the validator takes out of the response again).
        credentials = {"token_type": "DPoP", "dpop_jkt": proof.jkt} if proof else None
        headers = {"Content-Type": FORM_CONTENT_TYPE}
        for meta, name in (("HTTP_AUTHORIZATION", "Authorization"), ("HTTP_ORIGIN", "Origin")):
            if meta in request.META:
                headers[name] = request.META[meta]
        # The code and refresh-token grants read their login locked and write it: one transaction.
        # client_credentials only inserts its login (and its audit event), which on PostgreSQL
        # needs no BEGIN and COMMIT round trips; on SQLite each of those inserts would take the
        # database's write lock on its own, and one timing out would leave the other behind.
        locking = grant_type in LOCKING_GRANTS or connection.vendor == "sqlite"
        with transaction.atomic() if locking else contextlib.nullcontext():
            out_headers, out_body, status = get_server().create_token_response(
                request.build_absolute_uri(request.path), "POST", body, headers, credentials)
        if status >= 400:
            error = "invalid_client" if status == 401 else _error_code(out_body)
            if error in COUNTED_ERRORS:
                clientauth.record_failure(request, counters, error)
        response = HttpResponse(_with_description(out_body, status), status=status, content_type="application/json")
        for name, value in out_headers.items():
            if name.lower() not in {"content-type", "www-authenticate"}:
                response[name] = value
        response["Cache-Control"] = "no-store"
        response["Pragma"] = "no-cache"
        if auth_settings.DPOP_NONCE_REQUIRED and proof:  # RFC 9449 §8.2: the nonce for the next proof
            response["DPoP-Nonce"] = dpop.current_nonce()
        if status == 401:
            # RFC 6749 §5.2: the scheme the client used (Basic), not oauthlib's "Bearer".
            response["WWW-Authenticate"] = 'Basic realm="oauth2", error="invalid_client"'
        return response


def authenticated_client(request: HttpRequest, allow_public: bool) -> ClientApplication | HttpResponse:
    """The client a form POST authenticates (as at the token endpoint), or the error to answer.

    For the endpoints beside ``/oauth2/token`` (PAR, introspection, revocation): failed client
    authentication is throttled like there (one cache read otherwise); 401 ``invalid_client``.
    """
    counters = clientauth.failure_counters(request)
    wait = throttle.retry_after(counters)
    if wait is not None:
        return too_many_failures(wait)
    client, _used_basic = clientauth.authenticate_client(request, allow_public=allow_public)
    if client is None:
        clientauth.record_failure(request, counters, "invalid_client")
        response = oauth_error("invalid_client", "Client authentication failed.", status=401)
        response["WWW-Authenticate"] = 'Basic realm="oauth2"'
        return response
    return client


@method_decorator(csrf_exempt, name="dispatch")
class PushedAuthorizationView(View):
    """RFC 9126 §2: the client posts its authorization request, authenticated as at the token
    endpoint (public clients by ``client_id``), and gets a single-use ``request_uri`` (201)."""

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type != FORM_CONTENT_TYPE:
            return oauth_error("invalid_request", "Unsupported content type: use application/x-www-form-urlencoded.")
        client = authenticated_client(request, allow_public=True)
        if isinstance(client, HttpResponse):
            return client
        if _has_duplicates(request.POST):
            return oauth_error("invalid_request", "Duplicate parameters.")
        params = {key: value for key, value in _single_values(request.POST).items()
                  if key not in par.AUTHENTICATION_PARAMETERS}
        if "request_uri" in params:
            return oauth_error("invalid_request", "request_uri cannot be pushed (RFC 9126 §2.1).")
        params["client_id"] = client.client_id  # the authenticated client's, whatever Basic or the body said
        proof = dpop_proof(request)
        if isinstance(proof, HttpResponse):
            return proof
        # RFC 9449 §10.1: a proof at the PAR endpoint binds the code as dpop_jkt does; both must agree.
        if proof is not None and params.setdefault("dpop_jkt", proof.jkt) != proof.jkt:
            return dpop_error(dpop.invalid("dpop_jkt is not the thumbprint of the DPoP proof's key."))
        problem = authorization.check_pushed(params)
        if problem:
            return oauth_error(*problem)
        request_uri, expires_in = par.push(client, params)
        response = JsonResponse({"request_uri": request_uri, "expires_in": expires_in}, status=201)
        response["Cache-Control"] = "no-store"
        return response


def _bearer(request: HttpRequest) -> str | None:
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _registration_error(exc: registration.RegistrationError) -> JsonResponse:
    response = oauth_error(exc.error, exc.description, status=exc.status)
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


def _json_body(request: HttpRequest) -> object:
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise registration.RegistrationError("invalid_client_metadata", "Send the metadata as application/json.")
    if len(request.body) > registration.MAX_BODY:
        raise registration.RegistrationError("invalid_client_metadata", "The request body is too large.", 413)
    try:
        return jsonbody.loads(request.body)
    except jsonbody.JSONError:
        raise registration.RegistrationError("invalid_client_metadata", "The body is not valid JSON.") from None


def _registered(body: dict[str, object], status: int = 200) -> JsonResponse:
    response = JsonResponse(body, status=status)
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


@method_decorator(csrf_exempt, name="dispatch")
class RegisterView(View):
    """RFC 7591 §3: ``POST /oauth2/register`` with an initial access token as Bearer."""

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        try:
            grant = registration.authorize_registration(_bearer(request))
            metadata = registration.clean_metadata(_json_body(request))
            return _registered(registration.register(grant, metadata), status=201)
        except registration.RegistrationError as exc:
            return _registration_error(exc)


@method_decorator(csrf_exempt, name="dispatch")
class ClientConfigurationView(View):
    """RFC 7592 §2: read, replace or delete a registered client with its registration access token."""

    http_method_names = ["get", "put", "delete", "options"]

    def dispatch(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        try:
            return super().dispatch(request, *args, **kwargs)
        except registration.RegistrationError as exc:
            return _registration_error(exc)

    def get(self, request: HttpRequest, client_id: str) -> HttpResponse:
        client = registration.managed_client(client_id, _bearer(request))
        return _registered(registration.describe(client))

    def put(self, request: HttpRequest, client_id: str) -> HttpResponse:
        client = registration.managed_client(client_id, _bearer(request))
        return _registered(registration.update(client, _json_body(request)))

    def delete(self, request: HttpRequest, client_id: str) -> HttpResponse:
        client = registration.managed_client(client_id, _bearer(request))
        services.delete_client(client)
        response = HttpResponse(status=204)
        response["Cache-Control"] = "no-store"
        return response
