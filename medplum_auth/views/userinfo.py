"""``/oauth2/userinfo`` (OIDC Core §5.3): claims by scope for a valid access token."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from .. import bearer
from ..oauth2_validators import MedplumOAuth2Validator
from .oauth import OAuthMethodsMixin


def bearer_challenge(error: str, description: str, status: int = 401) -> HttpResponse:
    """RFC 6750 §3: 401 with ``WWW-Authenticate: Bearer`` (no error code when no token was sent)."""
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    challenge = 'Bearer realm="oauth2"'
    if error != "invalid_request":
        challenge += f', error="{error}", error_description="{description}"'
    response["WWW-Authenticate"] = challenge
    response["Cache-Control"] = "no-store"
    return response


def bearer_context(request: HttpRequest, allow_body: bool = False) -> bearer.AccessContext | HttpResponse:
    """The verified access token of the request, or the RFC 6750 401 response to return."""
    token = bearer.token_from_request(request, allow_body=allow_body)
    if not token:
        return bearer_challenge("invalid_request", "Missing access token.")
    try:
        return bearer.authenticate(token)
    except bearer.BearerError as exc:
        return bearer_challenge(exc.error, exc.description)


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
