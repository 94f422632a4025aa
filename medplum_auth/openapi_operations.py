"""OpenAPI description of medplum_auth's JSON endpoints: OAuth 2.0 / OIDC, discovery, the auth API.

Data read by :func:`medplum_auth.contrib.openapi.add_described_operations` (a drf-spectacular
hook); the views stay plain Django views. ``tests/test_openapi.py`` checks that every JSON route
is described here or in another app's ``openapi_operations`` module, and ``tests/e2e/test_schemathesis.py``
checks the live server's answers against it.
"""

from __future__ import annotations

from typing import Any

from .contrib.openapi import FORM, JSON, answer, body, header, path_parameter, query_parameter, ref, strings

OAUTH = "OAuth 2.0 and OpenID Connect"
DISCOVERY = "Discovery"
AUTH_API = "Auth API (Medplum)"
TAGS = [
    {"name": OAUTH, "description": "RFC 6749, 7009, 7591/7592, 7662, 9126 and OpenID Connect Core endpoints."},
    {"name": DISCOVERY, "description": "Provider metadata (OIDC Discovery, RFC 8414) and the JWK Set."},
    {"name": AUTH_API, "description": "Medplum's JSON sign-in API, used by @medplum/core."},
]

NO_STORE = {"Cache-Control": header("no-store")}
RETRY_AFTER = {"Retry-After": header("Seconds to wait", type="integer")}
BEARER = [{"bearerAuth": []}]
CLIENT_AUTH = [{"clientSecretBasic": []}, {}]  # Basic, or the credentials (or a public client_id) in the body
MEMBERSHIP_SUMMARY = strings("id", project=ref("Reference"), profile=ref("Reference"))

OAUTH_ERRORS: dict[str, Any] = {
    "400": ref("OAuthBadRequest", "responses"),
    "401": ref("OAuthUnauthorized", "responses"),
    "429": ref("OAuthThrottled", "responses"),
}
OUTCOME_400 = {"400": ref("BadRequestOutcome", "responses")}
BEARER_401 = {"401": ref("BearerUnauthorized", "responses")}
FORBIDDEN = {"403": answer("A token that may not do this (e.g. a client's own token)", ref("OperationOutcome"))}
THROTTLED_429 = {"429": answer("Too many attempts", ref("OperationOutcome"), headers=RETRY_AFTER)}

CLIENT_CREDENTIALS_FIELDS = strings("client_id", "client_secret", "client_assertion_type", "client_assertion")
TOKEN_REQUEST = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["authorization_code", "refresh_token", "client_credentials"]},
        **strings("code", "redirect_uri", "code_verifier", "refresh_token", "scope")["properties"],
        **CLIENT_CREDENTIALS_FIELDS["properties"],
    },
}
AUTHORIZATION_PARAMETERS = ("response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
                            "code_challenge", "code_challenge_method", "prompt", "max_age", "login_hint",
                            "id_token_hint", "launch", "aud")
PAR_REQUEST = {
    "type": "object",
    "required": ["response_type", "client_id"],
    "properties": {**strings(*AUTHORIZATION_PARAMETERS)["properties"], **CLIENT_CREDENTIALS_FIELDS["properties"]},
}
TOKEN_FORM = {"type": "object", "required": ["token"],
              "properties": {**strings("token", "token_type_hint")["properties"],
                             **CLIENT_CREDENTIALS_FIELDS["properties"]}}

#: RFC 9449: a DPoP proof JWT, at the token and PAR endpoints (binds the tokens to its key) and with
#: ``Authorization: DPoP <token>`` wherever an access token is sent (components/parameters/DPoPProof).
DPOP = ref("DPoPProof", "parameters")
DPOP_NONCE = {"DPoP-Nonce": header("The nonce for the next DPoP proof (RFC 9449 §8)", required=False)}

JSON_TYPES = (JSON, "application/fhir+json")  # @medplum/core sends application/fhir+json


def auth_api(summary: str, request: dict[str, Any] | None, responses: dict[str, Any], *,
             security: list[Any] | None = None, description: str = "", method: str = "post") -> dict[str, Any]:
    """A ``/auth/...`` operation: a JSON body (either JSON type) and OperationOutcome errors."""
    operation: dict[str, Any] = {"tags": [AUTH_API], "summary": summary, "responses": responses}
    if description:
        operation["description"] = description
    if request is not None:
        operation["requestBody"] = body(request, *JSON_TYPES)
    if security is not None:
        operation["security"] = security
    return {method: operation}


def oauth(summary: str, description: str, responses: dict[str, Any], *, request: dict[str, Any] | None = None,
          media_type: str = FORM, security: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {"tags": [OAUTH], "summary": summary, "description": description,
                                 "responses": responses, **extra}
    if request is not None:
        operation["requestBody"] = body(request, media_type)
    if security is not None:
        operation["security"] = security
    return operation


def client_authenticated(summary: str, description: str, success: dict[str, Any],
                         request: dict[str, Any], dpop: bool = False) -> dict[str, Any]:
    """A form POST authenticated as at the token endpoint, with its RFC 6749 errors (400, 401, 429);
    ``dpop``: it takes a DPoP proof (400 ``invalid_dpop_proof`` or ``use_dpop_nonce``)."""
    return {"post": oauth(summary, description, {**success, **OAUTH_ERRORS}, request=request, security=CLIENT_AUTH,
                          **({"parameters": [DPOP]} if dpop else {}))}


def _public_get(summary: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"tags": [DISCOVERY], "summary": summary, "security": [{}],
                    "responses": {"200": answer(summary, schema, headers={
                        "Cache-Control": header("public, max-age=300"),
                        "Access-Control-Allow-Origin": header("*")})}}}


USERINFO = oauth("UserInfo (OIDC Core §5.3)", "Claims of the token's user by scope (`profile`, `email`, `fhirUser`).",
                 {"200": answer("The claims", ref("UserInfo"), headers=NO_STORE), **BEARER_401}, security=BEARER,
                 parameters=[DPOP])
LOGOUT = oauth(
    "Sign out", "With `Authorization: Bearer` (Medplum's `signOut()`): revokes the login and answers an "
    "OperationOutcome. Without it: OIDC RP-initiated logout, an HTML confirmation page or a redirect to the "
    "registered `post_logout_redirect_uri`.",
    {"200": {"description": "Signed out (JSON with a Bearer token; else the HTML page)",
             "content": {JSON: {"schema": ref("OperationOutcome")}, "text/html": {"schema": {"type": "string"}}}},
     "302": answer("To the registered post_logout_redirect_uri", headers={"Location": header("The URI")}),
     "400": answer("Invalid logout request (HTML page)", {"type": "string"}, "text/html"),
     "403": answer("A confirmation form posted without its CSRF token (HTML page)", {"type": "string"},
                   "text/html"),
     **BEARER_401},
    security=[*BEARER, {}],
    parameters=[query_parameter(name, f"RP-initiated logout: {name}") for name in
                ("id_token_hint", "client_id", "post_logout_redirect_uri", "state")])

AUTHORIZE = oauth(
    "Authorization request (RFC 6749 §4.1.1)",
    "Browser endpoint: answers the sign-in flow's HTML pages or a redirect to the client's registered "
    "`redirect_uri` with `code`, `state` and `iss` (or `error`). An unknown client or redirect URI is an "
    "HTML 400 page, never a redirect. With `request_uri` (RFC 9126) the pushed parameters are used.",
    {"200": answer("An HTML page of the sign-in flow", {"type": "string"}, "text/html"),
     "302": answer("To the sign-in page, or to the client's redirect_uri with the result",
                   headers={"Location": header("Where to go")}),
     "400": answer("Invalid client or redirect URI (HTML page)", {"type": "string"}, "text/html")},
    security=[{}],
    parameters=[query_parameter(name, f"RFC 6749 / OIDC / SMART `{name}`")
                for name in (*AUTHORIZATION_PARAMETERS, "request_uri")])

PATHS: dict[str, Any] = {
    "/oauth2/authorize": {"get": AUTHORIZE, "post": {
        **AUTHORIZE, "parameters": [], "requestBody": body(strings(*AUTHORIZATION_PARAMETERS, "request_uri"), FORM),
        "summary": "Authorization request sent as a form (OIDC Core §3.1.2.1)"}},
    "/oauth2/token": client_authenticated(
        "Token endpoint (RFC 6749 §3.2)",
        "`authorization_code` (with PKCE `code_verifier`), `refresh_token` (rotated) and `client_credentials`. "
        "Clients authenticate with `client_secret_basic`, `client_secret_post`, `private_key_jwt` or, public "
        "clients, by `client_id`. Errors are RFC 6749 §5.2 error objects.",
        {"200": answer("Tokens (`token_type` DPoP when a proof was sent)", ref("TokenResponse"),
                       headers={**NO_STORE, **DPOP_NONCE})}, TOKEN_REQUEST, dpop=True),
    "/oauth2/par": client_authenticated(
        "Pushed authorization request (RFC 9126)",
        "The authorization request's parameters, client-authenticated as at the token endpoint; the answer's "
        "`request_uri` is single use, for this client, within `expires_in` seconds.",
        {"201": answer("Pushed", ref("PushedAuthorizationResponse"), headers=NO_STORE)}, PAR_REQUEST, dpop=True),
    "/oauth2/register": {"post": oauth(
        "Dynamic client registration (RFC 7591)",
        "Client metadata, authorized by an initial access token (Project Admin's **Client registration** page "
        "or `manage.py medplum_create_registration_token`), unless open registration is configured.",
        {"201": answer("Registered", ref("ClientInformation"), headers=NO_STORE),
         "400": answer("invalid_redirect_uri, invalid_client_metadata or invalid_software_statement",
                       ref("OAuthError")),
         "401": answer("Missing, unknown or revoked initial access token", ref("OAuthError"),
                       headers={"WWW-Authenticate": header('Bearer error="invalid_token"')}),
         "413": answer("Body too large", ref("OAuthError"))},
        request=ref("ClientMetadata"), media_type=JSON, security=[{"initialAccessToken": []}, {}])},
    "/oauth2/register/{client_id}": {
        "parameters": [path_parameter("client_id", "The registered client's id")],
        "get": oauth("Read a registered client (RFC 7592 §2.1)", "With its registration access token.",
                     {"200": answer("The client", ref("ClientInformation"), headers=NO_STORE),
                      "401": ref("RegistrationUnauthorized", "responses")},
                     security=[{"registrationAccessToken": []}]),
        "put": oauth("Replace a registered client's metadata (RFC 7592 §2.2)", "With its registration access token.",
                     {"200": answer("The updated client", ref("ClientInformation"), headers=NO_STORE),
                      "400": answer("Invalid metadata", ref("OAuthError")),
                      "401": ref("RegistrationUnauthorized", "responses"),
                      "413": answer("Body too large", ref("OAuthError"))},
                     request=ref("ClientMetadata"), media_type=JSON, security=[{"registrationAccessToken": []}]),
        "delete": oauth("Delete a registered client (RFC 7592 §2.3)", "With its registration access token.",
                        {"204": answer("Deleted", headers=NO_STORE),
                         "401": ref("RegistrationUnauthorized", "responses")},
                        security=[{"registrationAccessToken": []}]),
    },
    "/oauth2/introspect": client_authenticated(
        "Token introspection (RFC 7662)",
        "A confidential client of the token's project asks whether an access or refresh token is active.",
        {"200": answer("Active (with its claims) or `{\"active\": false}`", ref("IntrospectionResponse"),
                       headers=NO_STORE)}, TOKEN_FORM),
    "/oauth2/revoke": client_authenticated(
        "Token revocation (RFC 7009)", "A client revokes its own access or refresh token and the token's family.",
        {"200": answer("Revoked, or the token was unknown (RFC 7009 §2.2)")}, TOKEN_FORM),
    "/oauth2/userinfo": {"get": USERINFO, "post": {**USERINFO, "operationId": "oauth2_userinfo_post"}},
    "/oauth2/logout": {"get": LOGOUT, "post": {**LOGOUT, "operationId": "oauth2_logout_post"}},
    "/.well-known/openid-configuration": _public_get("OpenID Provider metadata", ref("ProviderMetadata")),
    "/.well-known/oauth-authorization-server": _public_get("Authorization server metadata (RFC 8414)",
                                                           ref("ProviderMetadata")),
    "/.well-known/jwks.json": _public_get("The JWK Set of the token signing keys", ref("JWKSet")),
    "/auth/login": auth_api(
        "Sign in with email and password",
        strings("email", "password", "clientId", "projectId", "scope", "nonce", "codeChallenge",
                "codeChallengeMethod", "resourceType", "remember", required=("email", "password", "clientId")),
        {"200": answer("A code (one profile), the memberships to choose from, or the second factor due",
                       ref("LoginResponse")), **OUTCOME_400}, security=[{}]),
    "/auth/profile": auth_api("Choose the profile of a login", strings("login", "profile",
                                                                         required=("login", "profile")),
                              {"200": answer("The code", ref("LoginResponse")), **OUTCOME_400}, security=[{}]),
    "/auth/me": auth_api("Session details (@medplum/core's SessionDetails)", None,
                         {"200": answer("Project, membership, profile and access policy", ref("SessionDetails"),
                                        headers=NO_STORE), **BEARER_401},
                         security=BEARER, method="get"),
    "/auth/resetpassword": auth_api(
        "Email a password reset link", strings("email", "projectId", "recaptchaToken", required=("email",)),
        {"200": answer("All OK, whether or not the email is known", ref("OperationOutcome")), **OUTCOME_400,
         **THROTTLED_429}, security=[{}]),
    "/auth/setpassword": auth_api(
        "Set a new password with the emailed link's id and secret",
        strings("id", "secret", "password", required=("id", "secret", "password")),
        {"200": answer("All OK", ref("OperationOutcome")), **OUTCOME_400}, security=[{}]),
    "/auth/changepassword": auth_api(
        "Change the signed-in user's password", strings("oldPassword", "newPassword",
                                                        required=("oldPassword", "newPassword")),
        {"200": answer("All OK", ref("OperationOutcome")), **OUTCOME_400, **BEARER_401, **FORBIDDEN,
         **THROTTLED_429}, security=BEARER),
    "/auth/launch": auth_api(
        "Create a SMART EHR launch", strings("clientId", "encounter", patient={"oneOf": [
            {"type": "string"}, ref("Reference")]}, required=("clientId", "patient")),
        {"201": answer("The launch id and the app's launch URL", strings("launch", "url"), headers=NO_STORE),
         **OUTCOME_400, **BEARER_401, **FORBIDDEN}, security=BEARER,
        description="A project admin's or practitioner's token; the launch is single use, for that client."),
    "/auth/mfa/status": auth_api(
        "The signed-in user's second factors", None,
        {"200": answer("Enrolled, or a new authenticator app enrollment to confirm", ref("MfaStatus"),
                       headers=NO_STORE), **BEARER_401, **FORBIDDEN}, security=BEARER, method="get"),
    "/auth/mfa/enroll": auth_api(
        "Confirm the authenticator app of /auth/mfa/status", strings("token", required=("token",)),
        {"200": answer("Enrolled, with new recovery codes", ref("MfaChange")), **OUTCOME_400, **BEARER_401,
         **FORBIDDEN, **THROTTLED_429}, security=BEARER),
    "/auth/mfa/disable": auth_api(
        "Turn the authenticator app off", strings("token", required=("token",)),
        {"200": answer("Turned off", ref("MfaChange")), **OUTCOME_400, **BEARER_401, **FORBIDDEN,
         **THROTTLED_429}, security=BEARER),
    "/auth/mfa/verify": auth_api(
        "Pass a login's second factor", strings("login", "token", required=("login", "token")),
        {"200": answer("As /auth/login answers without a second factor", ref("LoginResponse")), **OUTCOME_400,
         **THROTTLED_429}, security=[{}]),
    "/auth/mfa/login-enroll": auth_api(
        "Enroll an authenticator app during sign-in (MFA-required project)",
        strings("login", "token", required=("login", "token")),
        {"200": answer("As /auth/login answers, with recovery codes", ref("LoginResponse")), **OUTCOME_400,
         **THROTTLED_429}, security=[{}]),
}

OPEN_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
STRING_LIST = {"type": "array", "items": {"type": "string"}}

COMPONENTS: dict[str, Any] = {
    "securitySchemes": {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                       "description": "An access token from /oauth2/token; a DPoP-bound one (RFC 9449) goes as "
                                      "`Authorization: DPoP <token>` with a `DPoP` proof header instead"},
        "clientSecretBasic": {"type": "http", "scheme": "basic",
                              "description": "client_id and client_secret (RFC 6749 §2.3.1)"},
        "initialAccessToken": {"type": "http", "scheme": "bearer",
                               "description": "An initial access token for registration (RFC 7591 §3)"},
        "registrationAccessToken": {"type": "http", "scheme": "bearer",
                                    "description": "The registration_access_token of the client (RFC 7592)"},
    },
    "parameters": {"DPoPProof": {"name": "DPoP", "in": "header", "required": False, "schema": {"type": "string"},
                                 "description": "A DPoP proof JWT (RFC 9449 §4)"}},
    "responses": {
        "OAuthBadRequest": answer("An RFC 6749 §5.2 error (invalid_request, invalid_grant, unsupported_grant_type, "
                                  "invalid_scope, ..., RFC 9449's invalid_dpop_proof and use_dpop_nonce)",
                                  ref("OAuthError"), headers={**NO_STORE, **DPOP_NONCE}),
        "OAuthUnauthorized": answer("Client authentication failed (invalid_client)", ref("OAuthError"),
                                    headers={"WWW-Authenticate": header("Basic realm=\"oauth2\"")}),
        "OAuthThrottled": answer("Too many failed requests (temporarily_unavailable)", ref("OAuthError"),
                                 headers=RETRY_AFTER),
        "BearerUnauthorized": answer("Missing, invalid, expired or revoked access token (RFC 6750 §3), or a "
                                     "missing or wrong DPoP proof (RFC 9449 §7.1)", ref("OAuthError"),
                                     headers={"WWW-Authenticate": header("Bearer realm=\"oauth2\" (or DPoP ...)"),
                                              **DPOP_NONCE}),
        "RegistrationUnauthorized": answer("Missing or wrong registration access token, or no such client",
                                           ref("OAuthError")),
        "BadRequestOutcome": answer("Invalid request; `expression` names the field", ref("OperationOutcome")),
    },
    "schemas": {
        "OAuthError": {"type": "object", "required": ["error"], "description": "RFC 6749 §5.2 error object",
                       "properties": {"error": {"type": "string"}, "error_description": {"type": "string"},
                                      "error_uri": {"type": "string"}}},
        "OperationOutcome": {
            "type": "object", "required": ["resourceType", "issue"],
            "properties": {
                "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
                "id": {"type": "string"},
                "issue": {"type": "array", "items": {
                    "type": "object", "required": ["severity", "code"],
                    "properties": {"severity": {"type": "string",
                                                "enum": ["fatal", "error", "warning", "information"]},
                                   "code": {"type": "string"},
                                   "details": {"type": "object", "properties": {"text": {"type": "string"}}},
                                   "diagnostics": {"type": "string"},
                                   "expression": STRING_LIST}}}}},
        "Reference": strings("reference", "display"),
        "TokenResponse": {
            "type": "object", "required": ["access_token", "token_type", "expires_in"],
            "properties": {
                **strings("access_token", "token_type", "refresh_token", "id_token", "scope", "project", "profile",
                          "patient", "encounter", "smart_style_url")["properties"],
                "expires_in": {"type": "integer"}, "need_patient_banner": {"type": "boolean"},
                "project": ref("Reference"), "profile": ref("Reference")}},
        "PushedAuthorizationResponse": {"type": "object", "required": ["request_uri", "expires_in"],
                                        "properties": {"request_uri": {"type": "string"},
                                                       "expires_in": {"type": "integer"}}},
        "ClientMetadata": {
            "type": "object", "description": "RFC 7591 §2 client metadata",
            "properties": {
                "redirect_uris": STRING_LIST, "grant_types": STRING_LIST, "response_types": STRING_LIST,
                "post_logout_redirect_uris": STRING_LIST, "jwks": OPEN_OBJECT,
                "dpop_bound_access_tokens": {"type": "boolean"},
                **strings("client_name", "token_endpoint_auth_method", "jwks_uri", "scope",
                          "id_token_signed_response_alg", "software_statement", "client_uri", "logo_uri",
                          "tos_uri", "policy_uri", "software_id", "software_version")["properties"]}},
        "ClientInformation": {
            "allOf": [ref("ClientMetadata"), {
                "type": "object", "required": ["client_id"],
                "properties": {**strings("client_id", "client_secret", "registration_access_token",
                                         "registration_client_uri")["properties"],
                               "client_id_issued_at": {"type": "integer"},
                               "client_secret_expires_at": {"type": "integer"}}}]},
        "IntrospectionResponse": {
            "type": "object", "required": ["active"],
            "properties": {"active": {"type": "boolean"}, "exp": {"type": "integer"}, "iat": {"type": "integer"},
                           "cnf": {"type": "object", "properties": {"jkt": {"type": "string"}},
                                   "description": "The DPoP key's thumbprint of a bound token (RFC 9449 §6.2)"},
                           **strings("client_id", "scope", "iss", "sub", "token_type", "fhirUser", "patient",
                                     "encounter")["properties"]}},
        "UserInfo": {"type": "object", "required": ["sub"], "additionalProperties": True,
                     "properties": strings("sub", "name", "given_name", "family_name", "email", "fhirUser",
                                           "preferred_username")["properties"]},
        "ProviderMetadata": {"type": "object", "additionalProperties": True,
                             "required": ["issuer", "authorization_endpoint", "token_endpoint", "jwks_uri",
                                          "response_types_supported"],
                             "properties": strings("issuer", "authorization_endpoint", "token_endpoint",
                                                   "jwks_uri", "userinfo_endpoint", "registration_endpoint",
                                                   "pushed_authorization_request_endpoint")["properties"]},
        "JWKSet": {"type": "object", "required": ["keys"],
                   "properties": {"keys": {"type": "array", "items": {
                       "type": "object", "required": ["kty"], "additionalProperties": True,
                       "properties": strings("kty", "kid", "use", "alg", "n", "e", "crv", "x", "y")["properties"]}}}},
        "LoginResponse": {
            "type": "object", "required": ["login"],
            "properties": {"login": {"type": "string"}, "code": {"type": "string"},
                           "memberships": {"type": "array", "items": MEMBERSHIP_SUMMARY},
                           "mfaRequired": {"type": "boolean"}, "mfaMethods": STRING_LIST,
                           "mfaEnrollRequired": {"type": "boolean"}, "enrollUri": {"type": "string"},
                           "enrollQrCode": {"type": "string"}, "allowedMfaMethods": STRING_LIST,
                           "recoveryCodes": STRING_LIST}},
        "SessionDetails": {
            "type": "object", "required": ["project", "config"],
            "properties": {"project": OPEN_OBJECT, "config": OPEN_OBJECT, "user": OPEN_OBJECT,
                           "membership": OPEN_OBJECT, "profile": OPEN_OBJECT, "accessPolicy": OPEN_OBJECT}},
        "MfaStatus": {"type": "object", "required": ["enrolled"],
                      "properties": {"enrolled": {"type": "boolean"}, "methods": STRING_LIST,
                                     "recoveryCodesLeft": {"type": "integer"}, "enrollUri": {"type": "string"},
                                     "enrollQrCode": {"type": "string"}}},
        "MfaChange": {"allOf": [ref("OperationOutcome"),
                                {"type": "object", "properties": {"recoveryCodes": STRING_LIST}}]},
    },
}
