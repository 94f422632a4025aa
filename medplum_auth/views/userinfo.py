"""``/oauth2/userinfo`` (OIDC Core §5.3): claims by scope for a valid access token."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from .. import bearer
from ..oauth2_validators import MedplumOAuth2Validator
from .oauth import OAuthMethodsMixin


def bearer_challenge(error: bearer.BearerError) -> HttpResponse:
    """RFC 6750 §3 / RFC 9449 §7.1: 401 with ``WWW-Authenticate`` (and ``DPoP-Nonce`` to retry with)."""
    response = JsonResponse({"error": error.error, "error_description": error.description}, status=401)
    response["WWW-Authenticate"] = error.challenge("oauth2")
    if error.nonce:
        response["DPoP-Nonce"] = error.nonce
    response["Cache-Control"] = "no-store"
    return response


def bearer_context(request: HttpRequest, allow_body: bool = False) -> bearer.AccessContext | HttpResponse:
    """The verified access token of the request, or the 401 response to return."""
    found = bearer.credentials(request, allow_body=allow_body)
    if not found:
        return bearer_challenge(bearer.BearerError("invalid_request", "Missing access token."))
    scheme, token = found
    try:
        return bearer.authenticate(token, scheme=scheme, request=request)
    except bearer.BearerError as exc:
        return bearer_challenge(exc)


@method_decorator(csrf_exempt, name="dispatch")
class UserInfoView(OAuthMethodsMixin, View):
    http_method_names = ["get", "post", "options"]

    def get(self, request: HttpRequest) -> HttpResponse:
        context = bearer_context(request, allow_body=request.method == "POST")
        if isinstance(context, HttpResponse):
            return context
        login = context.login
        claims: dict[str, object] = {"sub": str(login.user_id) if login.user_id else login.client.client_id}
        if login.user_id:
            claims.update(MedplumOAuth2Validator.user_claims(login, context.scopes))
        response = JsonResponse(claims)
        response["Cache-Control"] = "no-store"
        return response

    post = get
