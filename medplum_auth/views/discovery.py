"""Discovery (OIDC Discovery 1.0, RFC 8414) and the JWK Set (RFC 7517). Advertise only what works."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from .. import dpop, keys, tokens
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
        "dpop_signing_alg_values_supported": list(dpop.ALGORITHMS),
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


@csrf_exempt  # public and GET only: any other method is a 405, not the CSRF failure page
@require_GET
def openid_configuration(request: HttpRequest) -> JsonResponse:
    return _public_json(metadata())


#: How long clients may keep the JWK Set. A rotation publishes the new key and signs with it at
#: once, and keeps the old key published (inactive) until an operator retires it: retire no sooner
#: than this plus ``keys.JWKS_CHECK_SECONDS`` after the rotation (and after the old key's last
#: tokens expired), so no client still trusts a set that lacks the new key, or keeps trusting the
#: retired one, past the overlap. Clients meeting an unknown ``kid`` refetch the set (RFC 7517 users
#: such as ``jose`` and ``openid-client`` do).
JWKS_MAX_AGE = 300


@csrf_exempt  # public and GET only: any other method is a 405, not the CSRF failure page
@require_GET
def jwks(request: HttpRequest) -> HttpResponse:
    """RFC 7517 §5, from memory (``keys.jwks_document``: rebuilt within 30 s of a change anywhere)."""
    response = HttpResponse(keys.jwks_document(), content_type="application/json")
    response["Access-Control-Allow-Origin"] = "*"
    response["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    return response

