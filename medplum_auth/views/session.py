"""Logout (Medplum's Bearer logout and OIDC RP-Initiated Logout 1.0), introspection, revocation."""

from __future__ import annotations

from django.contrib.auth import logout as django_logout
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from .. import bearer, tokens
from ..authorization import error_page
from ..digests import token_digest
from ..launch import context_fields as launch_context_fields
from ..models import ClientApplication, Login
from ..services import revoke_login
from ..validators import add_params
from .decorators import auth_page
from .oauth import OAuthMethodsMixin, authenticated_client, oauth_error
from .userinfo import bearer_context


def operation_outcome_ok() -> JsonResponse:
    return JsonResponse({"resourceType": "OperationOutcome", "id": "ok",
                         "issue": [{"severity": "information", "code": "informational",
                                    "details": {"text": "All OK"}}]})


@method_decorator(csrf_exempt, name="dispatch")
class LogoutView(View):
    """``/oauth2/logout``.

    With ``Authorization: Bearer`` (Medplum, ``@medplum/core`` ``signOut``): revoke the login and
    answer 200 OperationOutcome. Otherwise OIDC RP-Initiated Logout: ``id_token_hint``,
    ``post_logout_redirect_uri`` (registered per client, exact match), ``state``.
    """

    http_method_names = ["get", "post", "options"]

    def get(self, request: HttpRequest) -> HttpResponse:
        if "HTTP_AUTHORIZATION" in request.META:
            return self.bearer_logout(request)
        # A valid id_token_hint proves the RP sent the request; without one, the POST is our own
        # confirmation form and must carry our CSRF token.
        hinted = bool((request.POST if request.method == "POST" else request.GET).get("id_token_hint"))
        return auth_page(self.rp_logout if hinted else csrf_protect(self.rp_logout))(request)

    post = get  # Django's dispatch answers OPTIONS (Allow: GET, POST, OPTIONS) and 405 for other methods

    def bearer_logout(self, request: HttpRequest) -> HttpResponse:
        context = bearer_context(request)
        if isinstance(context, HttpResponse):
            return context
        revoke_login(context.login.load(), reason="logout")
        if request.user.is_authenticated and request.user.pk == context.login.user_id:
            django_logout(request)
        return operation_outcome_ok()

    def rp_logout(self, request: HttpRequest) -> HttpResponse:
        params = request.POST if request.method == "POST" else request.GET
        hint, redirect_uri = params.get("id_token_hint", ""), params.get("post_logout_redirect_uri", "")
        claims: dict[str, object] | None = None
        if hint:
            try:
                claims = tokens.decode(hint, tokens.ID_TOKEN_TYPE, verify_exp=False)
            except tokens.InvalidToken:
                return error_page(request, "Invalid logout request", "The id_token_hint is not valid.")
        client_id = params.get("client_id") or (claims or {}).get("aud")
        client = ClientApplication.objects.filter(client_id=client_id).first() if client_id else None
        if claims is not None and client_id and client is not None and claims.get("aud") != client.client_id:
            return error_page(request, "Invalid logout request", "The id_token_hint was not issued to this client.")
        if redirect_uri and (client is None or redirect_uri not in client.post_logout_redirect_uris.split()):
            return error_page(request, "Invalid logout request",
                              "post_logout_redirect_uri is not registered for this client.")
        # Without a valid hint, logging out could be forced by any site: ask first (OIDC RP-Initiated §2).
        if claims is None and request.method != "POST":
            return render(request, "medplum_auth/logout.html", {
                "client": client, "post_logout_redirect_uri": redirect_uri, "state": params.get("state", ""),
                "client_id": client_id or ""})
        if claims is not None and request.user.is_authenticated and str(claims.get("sub")) != str(request.user.pk):
            claims = None  # a hint for someone else: end our session, revoke nothing of theirs
        if claims is not None and isinstance(claims.get("login_id"), str):
            login = Login.objects.filter(pk=claims["login_id"]).first()
            if login is not None:
                revoke_login(login, reason="rp_logout")
        django_logout(request)
        if redirect_uri:
            return HttpResponseRedirect(add_params(redirect_uri, {"state": params.get("state") or None}))
        return render(request, "medplum_auth/logged_out.html")


def _login_for_token(token: str) -> tuple[Login | None, dict[str, object] | None]:
    """The login behind an access token (JWT) or a current refresh token; ``None`` if not ours."""
    logins = Login.objects.select_related("client__project", "membership", "project", "user")
    if token.count(".") == 2:
        try:
            claims = tokens.verify_access_token(token)
        except tokens.InvalidToken:
            return None, None
        return logins.filter(pk=claims["login_id"]).first(), claims
    return logins.filter(refresh_digest=token_digest(token)).first(), None


def _client_and_token(request: HttpRequest, allow_public: bool) -> tuple[ClientApplication, str] | HttpResponse:
    """The authenticated caller and the ``token`` parameter, or the error response (RFC 7662/7009).

    Failed client authentication is throttled as at the token endpoint (one cache read otherwise).
    """
    client = authenticated_client(request, allow_public=allow_public)
    if isinstance(client, HttpResponse):
        return client
    token = request.POST.get("token", "")
    if not token:
        return oauth_error("invalid_request", "Missing token.")
    return client, token


def _is_active(login: Login | None, claims: dict[str, object] | None) -> bool:
    """RFC 7662 §2.2: active only if the API would accept the token now (same checks as Bearer)."""
    try:
        usable = bearer.check_login(login)
    except bearer.BearerError:
        return False
    if claims is None:  # a refresh token: it expires on its own clock
        return usable.refresh_expires_at is not None and usable.refresh_expires_at > timezone.now()
    return True


@method_decorator(csrf_exempt, name="dispatch")
class IntrospectView(OAuthMethodsMixin, View):
    """RFC 7662: the caller authenticates as a confidential client of the token's project."""

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        authenticated = _client_and_token(request, allow_public=False)
        if isinstance(authenticated, HttpResponse):
            return authenticated
        caller, token = authenticated
        login, claims = _login_for_token(token)
        inactive = JsonResponse({"active": False})
        inactive["Cache-Control"] = "no-store"
        if login is None or login.project_id != caller.project_id or not _is_active(login, claims):
            return inactive
        body: dict[str, object] = {
            "active": True,
            "client_id": login.client.client_id,
            "scope": (claims or {}).get("scope", login.scope),
            "iss": tokens.auth_settings.ISSUER,
            "sub": str(login.user_id) if login.user_id else login.client.client_id,
            "token_type": ("DPoP" if (claims or {}).get("cnf") else "Bearer") if claims else "refresh_token",
        }
        if claims:
            body.update(exp=claims["exp"], iat=claims["iat"])
            if claims.get("cnf"):
                body["cnf"] = claims["cnf"]  # RFC 9449 §6.2: the resource server checks the proof's key
        elif login.dpop_jkt:
            body["cnf"] = {"jkt": login.dpop_jkt}  # a public client's refresh token is bound too
        elif login.refresh_expires_at:
            body["exp"] = int(login.refresh_expires_at.timestamp())
        if login.profile:
            body["fhirUser"] = f"{tokens.auth_settings.fhir_base_url}/{login.profile}"
        body.update(launch_context_fields(login))  # SMART 2.2 token introspection: echo the launch context
        response = JsonResponse(body)
        response["Cache-Control"] = "no-store"
        return response


@method_decorator(csrf_exempt, name="dispatch")
class RevokeView(OAuthMethodsMixin, View):
    """RFC 7009: a client revokes its own tokens; the whole login (token family) goes with them."""

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> HttpResponse:
        authenticated = _client_and_token(request, allow_public=True)
        if isinstance(authenticated, HttpResponse):
            return authenticated
        client, token = authenticated
        login, _claims = _login_for_token(token)
        if login is not None and login.client_id == client.pk:
            revoke_login(login, reason="revocation_endpoint")
        response = HttpResponse(status=200)
        response["Cache-Control"] = "no-store"
        return response
