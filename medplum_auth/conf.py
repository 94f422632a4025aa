"""One settings object for the app: ``MEDPLUM_AUTH = {...}`` read through ``auth_settings``.

Defaults live only in :data:`DEFAULTS`; every key is documented in ``docs/settings.md``
(a test keeps the two in step). Values are read lazily and the cache is dropped on
Django's ``setting_changed`` signal, so ``override_settings`` works in tests.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

SETTING_NAME = "MEDPLUM_AUTH"

# @medplum/core's ``refreshGracePeriod`` default (ms 300000): the SDK treats an access token as
# expired once less than this is left before its ``exp`` and fetches a new one before every call.
# Access tokens that live no longer than this make it loop (``startClientLogin()`` never returns).
SDK_REFRESH_GRACE_PERIOD = 300

DEFAULTS: dict[str, Any] = {
    # Public base URL of this server; the OAuth issuer (``iss``). No trailing slash.
    "ISSUER": "http://127.0.0.1:8000",
    # FHIR base URL advertised to SMART apps; ``None`` means ``ISSUER + "/fhir/R4"``.
    "FHIR_BASE_URL": None,
    # Most entries a FHIR batch or transaction Bundle may hold (``POST /fhir/R4``); more is a 413.
    "FHIR_BUNDLE_MAX_ENTRIES": 1000,
    # Most bytes of a batch or transaction request body (10 MiB); more is a 413, refused before parsing.
    "FHIR_BUNDLE_MAX_BYTES": 10 * 1024 * 1024,
    # Most bytes of any other FHIR request body (create, update, patch, $validate; 2.5 MiB, Django's
    # DATA_UPLOAD_MAX_MEMORY_SIZE default, which does not apply to /fhir/R4); more is a 413.
    "FHIR_RESOURCE_MAX_BYTES": 2621440,
    # Random bytes in a generated client secret (32 bytes = 256 bits, 64 hex characters).
    "CLIENT_SECRET_BYTES": 32,
    # Key of the HMAC-SHA256 digest that stores client secrets; ``None`` derives it from SECRET_KEY.
    "CLIENT_SECRET_DIGEST_KEY": None,
    # Secret that encrypts signing keys at rest; ``None`` derives it from SECRET_KEY
    # (SECRET_KEY_FALLBACKS are tried on decryption, so SECRET_KEY can be rotated).
    "KEY_ENCRYPTION_SECRET": None,
    # Algorithm of new signing keys: RS256 (required by OIDC and SMART), ES256 or ES384.
    "SIGNING_ALGORITHM": "RS256",
    # RSA modulus size of new RS256 signing keys.
    "RSA_KEY_SIZE": 2048,
    # Create a signing key after ``migrate`` when none is active.
    "AUTO_CREATE_SIGNING_KEY": True,
    # Seconds a pushed authorization request (RFC 9126, ``/oauth2/par``) stays usable, once.
    "PAR_LIFETIME": 90,
    # Accept authorization requests only through ``/oauth2/par``, for every client (a client can
    # also require it for itself: ``ClientApplication.require_pushed_authorization_requests``).
    "REQUIRE_PUSHED_AUTHORIZATION_REQUESTS": False,
    # Seconds a DPoP proof (RFC 9449) is accepted after its ``iat``; each proof's ``jti`` is kept
    # that long (plus clock skew) in Django's cache, so a replay at any instance sharing it fails.
    "DPOP_PROOF_LIFETIME": 60,
    # Require a server-issued nonce in every DPoP proof (RFC 9449 §8, §9): clients get one from a
    # ``use_dpop_nonce`` error and the ``DPoP-Nonce`` header, and retry (openid-client does).
    "DPOP_NONCE_REQUIRED": False,
    # Seconds a DPoP nonce window lasts; a nonce is accepted in its window and the next.
    "DPOP_NONCE_LIFETIME": 300,
    # Dynamic client registration (RFC 7591) without an initial access token, into the project
    # with this id; ``None`` (the default): registration needs a token a project admin issued.
    "OPEN_CLIENT_REGISTRATION": None,
    # Lifetime of authorization codes in seconds (RFC 6749 §4.1.2 recommends at most 10 minutes).
    "AUTHORIZATION_CODE_LIFETIME": 60,
    # Default access token lifetime in seconds (Medplum: 1 hour); a client may set its own.
    "ACCESS_TOKEN_LIFETIME": 3600,
    # Default refresh token lifetime in seconds (Medplum: 2 weeks), renewed on every rotation.
    "REFRESH_TOKEN_LIFETIME": 14 * 24 * 3600,
    # ID token lifetime in seconds.
    "ID_TOKEN_LIFETIME": 3600,
    # Upper bound in seconds of client_credentials access tokens. Medplum's one hour: @medplum/core
    # loops on tokens of ≤ 300 s (SDK_REFRESH_GRACE_PERIOD); SMART Backend Services recommends ≤ 300.
    "CLIENT_CREDENTIALS_MAX_LIFETIME": 3600,
    # Seconds an EHR launch context can be used after it is created.
    "LAUNCH_LIFETIME": 300,
    # Dotted path of the patient search behind the standalone-launch patient picker; ``None``
    # uses the one an installed app registers (fhir_api does), else a plain Patient id field.
    "PATIENT_SEARCH": None,
    # A client's access policy also restricts every user who signs in through it (member policy ∩
    # client policy). ``False`` is Medplum's looser behaviour: the client's policy applies only
    # to client_credentials (a system check warns).
    "CLIENT_POLICY_RESTRICTS_USERS": True,
    # Failed sign-ins per email and client address before sign-in is refused for the window.
    "SIGNIN_MAX_FAILURES": 10,
    # Seconds the failure count is kept.
    "SIGNIN_FAILURE_WINDOW": 900,
    # Failed client authentications and bad grants (invalid_client, invalid_grant) at /oauth2/token,
    # /oauth2/introspect and /oauth2/revoke per client id and client address before a 429 ...
    "TOKEN_CLIENT_MAX_FAILURES": 10,
    # ... and per client address, whatever the client (higher: one address may serve many clients).
    "TOKEN_IP_MAX_FAILURES": 100,
    # Seconds of the fixed window those failures are counted in.
    "TOKEN_FAILURE_WINDOW": 300,
    # Name an authenticator app shows beside the account (the ``issuer`` of the otpauth:// URI).
    "MFA_ISSUER_NAME": "Medplum Auth",
    # Recovery codes made when a second factor is enrolled (each single use).
    "MFA_RECOVERY_CODES": 10,
    # Wrong second-factor codes per user within MFA_FAILURE_WINDOW before the step is refused.
    "MFA_MAX_FAILURES": 10,
    # Seconds the MFA failure count is kept.
    "MFA_FAILURE_WINDOW": 900,
    # WebAuthn relying party id (a registrable domain of the sign-in page); ``None`` = ISSUER's host.
    "WEBAUTHN_RP_ID": None,
    # WebAuthn relying party name shown by the browser; ``None`` = MFA_ISSUER_NAME.
    "WEBAUTHN_RP_NAME": None,
    # Seconds an emailed password reset link works (it also stops once a password is set).
    "PASSWORD_RESET_LIFETIME": 3600,
    # Password reset requests per email address within PASSWORD_RESET_WINDOW (known or not) ...
    "PASSWORD_RESET_MAX_REQUESTS": 5,
    # ... and per client address.
    "PASSWORD_RESET_IP_MAX_REQUESTS": 20,
    # Seconds of the fixed window those requests are counted in.
    "PASSWORD_RESET_WINDOW": 3600,
    # Allow ``http://localhost`` and ``http://127.0.0.1`` redirect URIs (RFC 8252 §7.3).
    "ALLOW_LOOPBACK_HTTP_REDIRECTS": True,
    # Request header set by your reverse proxy with the client's address (e.g. "X-Forwarded-For");
    # ``None`` uses REMOTE_ADDR. Only the right-most address (the one your proxy added) is used, for
    # the audit trail, ``Login.remote_addr`` and the per-address throttles alike.
    "TRUSTED_PROXY_HEADER": None,
    # Days security events are kept; ``medplum_prune_audit`` deletes older ones (``None``: forever).
    "AUDIT_RETENTION_DAYS": 365,
    # Write a security event for every token issue and refresh (one INSERT on the token path).
    "AUDIT_TOKEN_EVENTS": True,
    # Largest Binary content accepted (bytes, raw or base64-decoded); larger uploads are refused
    # with a 413 OperationOutcome while they stream in.
    "BINARY_MAX_BYTES": 10 * 1024 * 1024,
    # Alias in Django's STORAGES of the storage Binary content is kept in ("default": the file
    # system under MEDIA_ROOT unless STORAGES says otherwise; any django-storages backend works).
    "BINARY_STORAGE": "default",
    # Public discovery documents ``medplum_auth.wsgi`` answers from memory for 30 s once produced.
    "API_CACHED_DOCUMENTS": ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server",
                             "/.well-known/smart-configuration", "/fhir/R4/.well-known/smart-configuration"),
}


class AuthSettings:
    """Attribute access to ``settings.MEDPLUM_AUTH`` with defaults; unknown names raise."""

    def __init__(self, defaults: dict[str, Any]):
        self.defaults = defaults
        self._cached: set[str] = set()

    @property
    def user_settings(self) -> dict[str, Any]:
        return getattr(settings, SETTING_NAME, None) or {}

    def __getattr__(self, name: str) -> Any:
        if name not in self.defaults:
            raise AttributeError(f"Invalid MEDPLUM_AUTH setting: {name!r}")
        value = self.user_settings.get(name, self.defaults[name])
        self._cached.add(name)
        setattr(self, name, value)
        return value

    @property
    def fhir_base_url(self) -> str:
        return (self.FHIR_BASE_URL or f"{self.ISSUER.rstrip('/')}/fhir/R4").rstrip("/")

    def reload(self) -> None:
        for name in self._cached:
            delattr(self, name)
        self._cached.clear()


auth_settings = AuthSettings(DEFAULTS)


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        auth_settings.reload()


setting_changed.connect(_reload)
