"""Discovery (OIDC Discovery 1.0, RFC 8414) and the JWK Set (RFC 7517). Advertise only what works."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from .. import keys, tokens
from ..conf import auth_settings


def _public_json(data: dict[str, Any], max_age: int = 300) -> JsonResponse:
    response = JsonResponse(data)
    response["Access-Control-Allow-Origin"] = "*"
    response["Cache-Control"] = f"public, max-age={max_age}"
    return response


def metadata() -> dict[str, Any]:
    issuer = auth_settings.ISSUER
    algorithms = sorted({*tokens.published_algorithms(), auth_settings.SIGNING_ALGORITHM})
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth2/authorize",
        "token_endpoint": f"{issuer}/oauth2/token",
        "userinfo_endpoint": f"{issuer}/oauth2/userinfo",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "end_session_endpoint": f"{issuer}/oauth2/logout",
        "introspection_endpoint": f"{issuer}/oauth2/introspect",
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
        "pushed_authorization_request_endpoint": f"{issuer}/oauth2/par",
        "registration_endpoint": f"{issuer}/oauth2/register",
        "require_pushed_authorization_requests": bool(auth_settings.REQUIRE_PUSHED_AUTHORIZATION_REQUESTS),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt",
                                                  "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "ES256", "ES384"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile", "email", "fhirUser", "offline_access", "online_access"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "amr", "acr", "nonce", "at_hash", "name",
                             "given_name", "family_name", "preferred_username", "email", "email_verified",
                             "profile", "fhirUser"],
        "prompt_values_supported": ["none", "login", "consent"],
        # acr_values=mfa asks for a sign-in with a second factor (step-up); the ID token's acr says
        # which one happened.
        "acr_values_supported": ["pwd", "mfa"],
        "authorization_response_iss_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "claims_parameter_supported": False,
        "ui_locales_supported": ["en"],
    }


@require_GET
def openid_configuration(request: HttpRequest) -> JsonResponse:
    return _public_json(metadata())


@require_GET
def jwks(request: HttpRequest) -> JsonResponse:
    return _public_json(keys.jwks())

