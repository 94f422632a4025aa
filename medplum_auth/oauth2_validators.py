"""Every OAuth 2.0 / OpenID Connect decision of the authorization server, in one class.

:class:`MedplumOAuth2Validator` subclasses django-oauth-toolkit's validator, which oauthlib's
grant types call. It replaces DOT's token storage with :class:`~medplum_auth.models.Login`
(authorization code digest, refresh-token family, revocation) and issues JWT access tokens.
Where DOT or Medplum are loose it is strict: exact redirect URIs, S256-only PKCE, code expiry,
code-replay revocation, refresh-token reuse detection (RFC 9700 §2.1, §2.2.2, §4.14).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import secrets
import time
from datetime import timedelta
from typing import Any
from urllib.parse import unquote_plus

from django.utils import timezone
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.oauth2.rfc6749 import errors

from . import assertions, audit, logins, lookups, tokens
from . import scopes as scope_utils
from .conf import auth_settings
from .digests import token_digest  # noqa: F401 - also imported from here (bench, tests)
from .launch import context_fields as launch_context_fields
from .models import ClientApplication, Login
from .services import revoke_login

log = logging.getLogger("medplum_auth.audit")

GRANT_TYPES_ALL = frozenset({"authorization_code", "refresh_token"})
GRANT_TYPES_CONFIDENTIAL = GRANT_TYPES_ALL | {"client_credentials"}


def pkce_s256_matches(challenge: str, verifier: Any) -> bool:
    """RFC 7636 §4.6 for ``S256`` (the only method stored), compared in constant time."""
    if not isinstance(verifier, str) or not verifier:
        return False
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii", "replace")).digest()).rstrip(b"=")
    return secrets.compare_digest(digest, challenge.encode("ascii", "replace"))


def dpop_jkt(request: Any) -> str | None:
    """Thumbprint of the token request's verified DPoP proof key (``views.oauth.TokenView``)."""
    return (getattr(request, "extra_credentials", None) or {}).get("dpop_jkt")


def dpop_refused(description: str, request: Any) -> errors.OAuth2Error:
    """RFC 9449 §5: a proof that is missing, or signed by another key than the grant is bound to."""
    return errors.CustomOAuth2Error("invalid_dpop_proof", description=description, request=request)


def generate_refresh_token(request: Any) -> str:
    return secrets.token_urlsafe(32)


AUTH_METHOD = "token_endpoint_auth_method"  # RFC 7591 §2


def _registered(client: Any, name: str, value: str) -> bool:
    """RFC 7591 §2: whether a dynamically registered client registered ``value`` as its ``name``
    (one of its ``grant_types`` or ``response_types``, its ``token_endpoint_auth_method``): it uses
    those only, not every one its credentials would allow. Clients made in Project Admin or the
    Django admin registered nothing and may use all."""
    registered = (client.registered_metadata or {}).get(name)
    if isinstance(registered, list):
        return value in registered
    if isinstance(registered, str) and registered != value:
        log.info("client refused client_id=%r %s=%s registered=%s", client.client_id, name, value, registered)
        return False
    return True


def _basic_credentials(request: Any) -> str | None:
    """The base64 part of ``Authorization: Basic …`` (scheme case-insensitive, RFC 7617 §2)."""
    header = (request.headers or {}).get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "basic" else None


def _assertion_sent(request: Any) -> bool:
    return bool(getattr(request, "client_assertion_type", None) or getattr(request, "client_assertion", None))


class MedplumOAuth2Validator(OAuth2Validator):
    # --- clients --------------------------------------------------------------------------

    def _load_application(self, client_id: str, request: Any) -> ClientApplication | None:
        client = request.client
        if isinstance(client, ClientApplication) and client.client_id == client_id:
            return client if client.is_active else None
        if not client_id or not isinstance(client_id, str) or "\x00" in client_id:
            return None
        client = lookups.client_by_client_id.get(client_id)
        if client is None or not client.is_active:
            request.client = None
            return None
        request.client = client
        return client

    def authenticate_client(self, request: Any, *args: Any, **kwargs: Any) -> bool:
        """RFC 6749 §2.3.1 (``client_secret_basic``, ``client_secret_post``) or RFC 7523
        ``private_key_jwt``; confidential clients only."""
        if _assertion_sent(request):
            return self._authenticate_assertion(request)
        basic = _basic_credentials(request)
        if basic:
            request.medplum_auth_scheme = "Basic"
            try:
                client_id, secret = map(unquote_plus, base64.b64decode(basic, validate=True).decode().split(":", 1))
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return False
            if request.client_id and request.client_id != client_id:
                return False
        elif getattr(request, "client_secret", None):
            client_id, secret = request.client_id, request.client_secret
        else:
            return False
        client = self._load_application(client_id, request)
        if client is None or not client.is_confidential or not client.verify_secret(secret):
            log.info("client authentication failed client_id=%r", client_id)
            return False
        if not _registered(client, AUTH_METHOD, "client_secret_basic" if basic else "client_secret_post"):
            return False
        request.client_id = client.client_id
        return True

    def _authenticate_assertion(self, request: Any) -> bool:
        assertion = getattr(request, "client_assertion", None)
        assertion_type = getattr(request, "client_assertion_type", None)
        if assertion_type != assertions.ASSERTION_TYPE or not isinstance(assertion, str):
            return False
        client_id = assertions.client_id_of(assertion)
        if not client_id or (request.client_id and request.client_id != client_id):
            return False
        client = self._load_application(client_id, request)
        if client is None or not client.is_confidential:
            return False
        try:
            assertions.verify(assertion, client, endpoint=request.uri)
        except assertions.AssertionError_ as exc:
            log.info("client assertion refused client_id=%r reason=%s", client_id, exc)
            return False
        if not _registered(client, AUTH_METHOD, "private_key_jwt"):
            return False
        request.client_id = client.client_id
        return True

    def client_authentication_required(self, request: Any, *args: Any, **kwargs: Any) -> bool:
        # Credentials that were sent are always checked, whatever client the body names (DOT means
        # to do this for Basic but looks for a WSGI "HTTP_AUTHORIZATION" key oauthlib never has).
        if _assertion_sent(request) or _basic_credentials(request):
            return True
        if not request.client_id and request.grant_type == "refresh_token":
            # RFC 6749 §6 and SMART App Launch 2.2 list no client_id for a public client's refresh
            # (SMART client-js sends none): the client is the one the refresh token was issued to.
            # A confidential one must still authenticate; a public one is checked as usual.
            request.client_id = self._refresh_token_client_id(request.refresh_token)
        return super().client_authentication_required(request, *args, **kwargs)

    def _refresh_token_client_id(self, refresh_token: Any) -> str | None:
        """The client_id a current or rotated-out refresh token was issued to (reuse is then caught)."""
        if not refresh_token or not isinstance(refresh_token, str) or len(refresh_token) > 512:
            return None
        digest = token_digest(refresh_token)
        client_ids = Login.objects.values_list("client__client_id", flat=True)
        return (client_ids.filter(refresh_digest=digest).first()
                or client_ids.filter(previous_refresh_digest=digest).first())

    def authenticate_client_id(self, client_id: str, request: Any, *args: Any, **kwargs: Any) -> bool:
        """Public clients identify themselves by ``client_id`` alone (RFC 6749 §3.2.1)."""
        client = self._load_application(client_id, request)
        return client is not None and not client.is_confidential

    def validate_client_id(self, client_id: str, request: Any, *args: Any, **kwargs: Any) -> bool:
        return self._load_application(client_id, request) is not None

    def validate_grant_type(self, client_id: str, grant_type: str, client: Any, request: Any,
                            *args: Any, **kwargs: Any) -> bool:
        allowed = GRANT_TYPES_CONFIDENTIAL if client.is_confidential else GRANT_TYPES_ALL
        if not _registered(client, "grant_types", grant_type):
            # RFC 7591 §2: a dynamically registered client uses the grants it registered only (one
            # registered for sign-ins gets no project-wide client_credentials access of its own).
            return False
        if grant_type in allowed and client.dpop_bound_access_tokens and not dpop_jkt(request):
            # RFC 9449 §5.2 (dpop_bound_access_tokens): after client authentication, for every grant.
            raise dpop_refused("This client must send a DPoP proof with its token requests (RFC 9449).", request)
        return grant_type in allowed

    def validate_response_type(self, client_id: str, response_type: str, client: Any, request: Any,
                               *args: Any, **kwargs: Any) -> bool:
        if response_type != "code":
            raise errors.UnsupportedResponseTypeError(request=request)
        return _registered(client, "response_types", response_type)  # False: unauthorized_client

    # --- redirect URIs, scopes, PKCE ------------------------------------------------------

    def validate_redirect_uri(self, client_id: str, redirect_uri: str, request: Any,
                              *args: Any, **kwargs: Any) -> bool:
        return request.client.redirect_uri_allowed(redirect_uri)

    def get_default_redirect_uri(self, client_id: str, request: Any, *args: Any, **kwargs: Any) -> str | None:
        login = getattr(request, "login", None)
        if login is not None:  # token request without redirect_uri: see confirm_redirect_uri
            return login.redirect_uri or "urn:medplum:no-redirect-uri"
        uris = request.client.redirect_uri_list
        return uris[0] if len(uris) == 1 else None

    def validate_scopes(self, client_id: str, scopes: list[str], client: Any, request: Any,
                        *args: Any, **kwargs: Any) -> bool:
        return all(scope_utils.is_supported(s) for s in scopes)

    def get_default_scopes(self, client_id: str, request: Any, *args: Any, **kwargs: Any) -> list[str]:
        return ["openid"]

    def is_pkce_required(self, client_id: str, request: Any) -> bool:
        client = self._load_application(client_id, request) if client_id else request.client
        return not (client and client.pkce_optional)

    # --- authorization codes ----------------------------------------------------------------

    def save_authorization_code(self, client_id: str, code: dict[str, str], request: Any,
                                *args: Any, **kwargs: Any) -> None:
        """Create the :class:`Login` for this authorization; only the code's digest is stored."""
        request.login, _code = logins.create_login(
            user=request.user,
            client=request.client,
            membership=request.membership,
            scope=" ".join(request.scopes),
            auth_time=request.auth_time,
            nonce=request.nonce or "",
            redirect_uri="" if getattr(request, "using_default_redirect_uri", False) else request.redirect_uri,
            code_challenge=request.code_challenge or "",
            code_challenge_method=(request.code_challenge_method or "") if request.code_challenge else "",
            remote_addr=getattr(request, "remote_addr", None),
            dpop_jkt=getattr(request, "dpop_jkt", "") or "",
            user_agent=getattr(request, "user_agent", "") or "",
            code=code["code"],
            launch=getattr(request, "medplum_launch", None),
            launch_patient=getattr(request, "launch_patient", ""),
            launch_encounter=getattr(request, "launch_encounter", ""),
            amr=getattr(request, "amr", "") or "pwd",
            resource_scopes_withheld=bool(getattr(request, "resource_scopes_withheld", False)),
        )

    def _login_for_code(self, code: str) -> Login | None:
        """The code's login, locked. Not checked against the client: request.client is, by the caller."""
        if not code or not isinstance(code, str):
            return None
        return lookups.login_by_code_for_update.get(token_digest(code))

    def get_authorization_code_scopes(self, client_id: str, code: str, redirect_uri: str, request: Any) -> list[str]:
        """Only picks OAuth 2.0 or OpenID Connect handling; validate_code does the checks.

        oauthlib asks this before validate_code, so the code's login is looked up (and locked)
        here once and kept on the request for validate_code.
        """
        login = self._login_for_code(code)
        request.medplum_code_login = (code, login)
        return scope_utils.split(login.scope) if login is not None else []

    def validate_code(self, client_id: str, code: str, client: Any, request: Any, *args: Any, **kwargs: Any) -> bool:
        """RFC 6749 §4.1.3 and §10.5: bound to the client, unexpired, single use.

        A second redemption revokes the login, and with it the tokens of the first (§4.1.2).
        """
        looked_up = getattr(request, "medplum_code_login", None)
        login = looked_up[1] if looked_up and looked_up[0] == code else self._login_for_code(code)
        if login is None or login.client_id != client.pk:
            raise errors.InvalidGrantError(description="Invalid code", request=request)
        if login.code_redeemed_at is not None:
            revoke_login(login, reason="authorization_code_replay")
            raise errors.InvalidGrantError(description="Token already granted", request=request)
        if login.revoked_at is not None:
            raise errors.InvalidGrantError(description="Token revoked", request=request)
        if login.code_expires_at is None or login.code_expires_at <= timezone.now():
            raise errors.InvalidGrantError(description="Code expired", request=request)
        if login.membership_id and not login.membership.active:
            raise errors.InvalidGrantError(description="Profile not active", request=request)
        if login.dpop_jkt and dpop_jkt(request) != login.dpop_jkt:
            # RFC 9449 §10: the code is bound to the dpop_jkt of the authorization request.
            raise dpop_refused("The code is bound to a DPoP key (dpop_jkt): send a proof signed with it.", request)
        if not login.code_challenge and request.code_verifier is not None:
            # RFC 9700 §4.8.2 (PKCE downgrade): oauthlib would ignore the verifier.
            raise errors.InvalidGrantError(description="code_verifier sent but the authorization request had "
                                                       "no code_challenge", request=request)
        if login.code_challenge and request.code_verifier is not None and not pkce_s256_matches(
                login.code_challenge, request.code_verifier):
            # RFC 7636 §4.6. A wrong verifier burns the code (its login is revoked), so a stolen
            # code cannot be tried against guessed verifiers; the client restarts the flow. (A
            # missing one is oauthlib's invalid_request and guesses nothing.)
            revoke_login(login, reason="code_verifier_mismatch")
            raise errors.InvalidGrantError(description="Invalid code_verifier", request=request)
        request.login = login
        request.user = login.user
        request.scopes = scope_utils.split(login.scope)
        request.claims = None
        return True

    def get_code_challenge(self, code: str, request: Any) -> str | None:
        return request.login.code_challenge or None

    def get_code_challenge_method(self, code: str, request: Any) -> str | None:
        return request.login.code_challenge_method or None

    def confirm_redirect_uri(self, client_id: str, code: str, redirect_uri: str, client: Any, request: Any,
                             *args: Any, **kwargs: Any) -> bool:
        """RFC 6749 §4.1.3: identical to the authorization request's ``redirect_uri``.

        Omitting it (or sending it empty, as ``@medplum/core`` does in Node) is accepted only
        when the code is PKCE-bound or the authorization request omitted it too (OAuth 2.1 §4.1.3).
        """
        login: Login = request.login
        if getattr(request, "using_default_redirect_uri", False) or not redirect_uri:
            matches = bool(login.code_challenge) or not login.redirect_uri
        elif login.redirect_uri:
            matches = redirect_uri == login.redirect_uri
        else:
            matches = client.redirect_uri_allowed(redirect_uri)
        if not matches:
            # RFC 6749 §5.2: a grant that does not match its redirect URI is invalid_grant (oauthlib
            # would answer invalid_request).
            raise errors.InvalidGrantError(description="redirect_uri does not match the authorization request",
                                           request=request)
        return True

    def invalidate_authorization_code(self, client_id: str, code: str, request: Any,
                                      *args: Any, **kwargs: Any) -> None:
        if request.login.code_redeemed_at is None:  # save_bearer_token marks it in its own update
            Login.objects.filter(pk=request.login.pk).update(code_redeemed_at=timezone.now())

    def get_authorization_code_nonce(self, client_id: str, code: str, redirect_uri: str, request: Any) -> str | None:
        return request.login.nonce or None

    # --- tokens ----------------------------------------------------------------------------

    def access_token_lifetime(self, request: Any) -> int:
        client = request.client
        lifetime = int(client.access_token_lifetime or auth_settings.ACCESS_TOKEN_LIFETIME)
        if getattr(request, "grant_type", None) == "client_credentials":  # SMART Backend Services: ≤ 300 s
            lifetime = min(lifetime, int(auth_settings.CLIENT_CREDENTIALS_MAX_LIFETIME))
        return lifetime

    def _ensure_login(self, request: Any) -> Login:
        """client_credentials has no prior authorization: its login is made when tokens are."""
        login = getattr(request, "login", None)
        if login is None:
            client = request.client
            now = timezone.now()  # tokens are issued in this same request (and transaction)
            login = Login.objects.create(
                client=client, project=client.project, auth_method=Login.Method.CLIENT,
                auth_time=now, granted_at=now, scope=" ".join(request.scopes or []),
            )
            request.login = login
        return login

    def generate_access_token(self, request: Any) -> str:
        login = self._ensure_login(request)
        client = request.client
        subject = str(login.user_id) if login.user_id else client.client_id
        jkt = dpop_jkt(request)
        return tokens.issue_access_token(
            subject=subject, client_id=client.client_id, login_id=str(login.pk),
            scope=" ".join(request.scopes or []), profile=login.profile,
            lifetime=self.access_token_lifetime(request),
            extra={"cnf": {"jkt": jkt}} if jkt else None,  # RFC 9449 §6.1
        )

    def save_bearer_token(self, token: dict[str, Any], request: Any, *args: Any, **kwargs: Any) -> None:
        """Record the issue on the login and add Medplum's response fields (project, profile)."""
        login = self._ensure_login(request)
        client = request.client
        now = timezone.now()
        fields: dict[str, Any] = {}
        scopes = scope_utils.split(token.get("scope", login.scope))
        refresh = token.get("refresh_token")
        offline = login.user_id and (scope_utils.wants_refresh_token(scopes) or client.always_issue_refresh_token) and (
            _registered(client, "grant_types", "refresh_token"))  # no refresh token it may not use
        if refresh and offline and refresh != getattr(request, "refresh_token", None):
            lifetime = int(client.refresh_token_lifetime or auth_settings.REFRESH_TOKEN_LIFETIME)
            fields.update(previous_refresh_digest=login.refresh_digest, refresh_digest=token_digest(refresh),
                          refresh_rotated_at=now, refresh_expires_at=now + timedelta(seconds=lifetime))
        else:
            token.pop("refresh_token", None)
        if login.granted_at is None:
            fields["granted_at"] = now
        if getattr(request, "grant_type", None) == "refresh_token":
            fields["last_refreshed_at"] = now
        if getattr(request, "grant_type", None) == "authorization_code" and login.code_redeemed_at is None:
            fields["code_redeemed_at"] = now  # the code is spent in the same update (single use)
        jkt = token.pop("dpop_jkt", None)  # oauthlib copied the extra credentials into the response
        # RFC 9449 §5: a public client's refresh token is bound to the key of the proof it was
        # issued with; a confidential client's is bound by its authentication, so its login
        # keeps no key once the (possibly dpop_jkt-bound) code is spent.
        binding = (jkt or "") if not client.is_confidential else ""
        grant_type = getattr(request, "grant_type", None)
        if (grant_type == "authorization_code" and login.dpop_jkt != binding) or (
                grant_type == "refresh_token" and binding and not login.dpop_jkt):
            fields["dpop_jkt"] = binding
        if fields:
            for name, value in fields.items():
                setattr(login, name, value)
            Login.objects.filter(pk=login.pk).update(**fields)
        token["scope"] = " ".join(scopes)
        token["project"] = {"reference": login.project.reference, "display": login.project.name}
        profile = login.profile
        if profile:
            token["profile"] = {"reference": profile}
            if login.membership_id:
                token["profile"]["display"] = login.membership.profile_display
        if login.user_id:  # SMART launch context (medplum_auth.launch) and styles
            context = launch_context_fields(login)
            token.update(context)
            if "patient" in context:
                token["need_patient_banner"] = True
            token["smart_style_url"] = f"{auth_settings.fhir_base_url}/.well-known/smart-styles.json"
        grant = getattr(request, "grant_type", None)
        if audit.token_events_enabled():
            audit.record_for_login(
                audit.EventType.TOKEN_REFRESHED if grant == "refresh_token" else audit.EventType.TOKEN_ISSUED,
                login, client=client,
                detail={"grant": grant, "scopes": scopes, "refresh_token": "refresh_token" in token},
                message=f"tokens issued login={login.pk} client={client.client_id} grant={grant}")
        else:
            log.info("tokens issued login=%s client=%s grant=%s", login.pk, client.client_id, grant)

    # --- refresh tokens --------------------------------------------------------------------

    def validate_refresh_token(self, refresh_token: str, client: Any, request: Any, *args: Any, **kwargs: Any) -> bool:
        """RFC 6749 §6, RFC 9700 §4.14.2: a rotated-out refresh token revokes its whole family."""
        def refuse(description: str) -> bool:
            raise errors.InvalidGrantError(description=description, request=request)

        if not refresh_token or not isinstance(refresh_token, str) or len(refresh_token) > 512:
            return refuse("Invalid refresh token")
        digest = token_digest(refresh_token)
        login = lookups.login_by_refresh_for_update.get(digest)  # client: request.client
        if login is None:
            replayed = Login.objects.filter(previous_refresh_digest=digest).first()
            if replayed is not None:
                revoke_login(replayed, reason="refresh_token_reuse")
                audit.record_for_login(audit.EventType.REFRESH_TOKEN_REUSE, replayed,
                                       outcome=audit.Outcome.SERIOUS_FAILURE, reason="refresh_token_reuse",
                                       message=f"refresh token reuse login={replayed.pk}: family revoked")
                return refuse("Token revoked")
            return refuse("Invalid refresh token")
        if login.client_id != client.pk:
            return refuse("Invalid refresh token")
        if login.revoked_at is not None:
            return refuse("Token revoked")
        if login.refresh_expires_at is None or login.refresh_expires_at <= timezone.now():
            return refuse("Refresh token expired")
        if login.membership_id and not login.membership.active:
            return refuse("Profile not active")
        if login.user_id and not login.user.is_active:
            return refuse("User not active")
        if login.dpop_jkt and dpop_jkt(request) != login.dpop_jkt:
            # RFC 9449 §5: a public client's refresh token is bound to its DPoP key.
            raise dpop_refused("The refresh token is bound to a DPoP key: send a proof signed with it.", request)
        request.login = login
        request.user = login.user
        request.refresh_token = refresh_token
        return True

    def get_original_scopes(self, refresh_token: str, request: Any, *args: Any, **kwargs: Any) -> list[str]:
        return scope_utils.split(request.login.scope)

    def rotate_refresh_token(self, request: Any) -> bool:
        return True

    # --- ID tokens (OpenID Connect Core §2, §3.1.3.6) --------------------------------------

    def get_id_token(self, token: dict[str, Any], token_handler: Any, request: Any) -> None:
        return None  # let oauthlib add aud, iat, nonce and at_hash; finalize_id_token signs

    def finalize_id_token(self, id_token: dict[str, Any], token: dict[str, Any], token_handler: Any,
                          request: Any) -> str:
        login: Login = request.login
        now = int(time.time())
        claims = dict(id_token)
        claims.update(
            iss=auth_settings.ISSUER,
            sub=str(login.user_id) if login.user_id else request.client.client_id,
            aud=request.client.client_id,
            iat=now,
            exp=now + int(auth_settings.ID_TOKEN_LIFETIME),
            auth_time=int(login.auth_time.timestamp()),
            login_id=str(login.pk),
        )
        if login.amr:
            claims["amr"] = login.amr.split()  # RFC 8176: how the user signed in (pwd, otp, hwk, mfa)
            claims["acr"] = "mfa" if "mfa" in claims["amr"] else "pwd"  # OIDC Core §2: our acr_values_supported
        profile = login.profile
        if profile:
            claims["fhirUser"] = f"{auth_settings.fhir_base_url}/{profile}"
        if not claims.get("nonce") and login.nonce and getattr(request, "grant_type", None) != "refresh_token":
            claims["nonce"] = login.nonce
        if login.user_id:
            claims.update(self.user_claims(login, scope_utils.split(login.scope)))
        return tokens.sign(claims, tokens.ID_TOKEN_TYPE)

    @staticmethod
    def user_claims(login: Login, scopes: list[str]) -> dict[str, Any]:
        """Standard claims by scope (OIDC Core §5.4), shared by ID tokens and userinfo."""
        user = login.user
        claims: dict[str, Any] = {}
        if "profile" in scopes:
            claims.update(name=user.get_full_name() or user.get_username(),
                          given_name=user.first_name, family_name=user.last_name,
                          preferred_username=user.get_username())
            if login.membership_id:
                claims["profile"] = login.membership.profile
        if "email" in scopes and user.email:
            claims.update(email=user.email, email_verified=False)
        if "fhirUser" in scopes and login.membership_id:
            claims["fhirUser"] = f"{auth_settings.fhir_base_url}/{login.membership.profile}"
        return claims

    def validate_silent_login(self, request: Any) -> bool:
        return True  # prompt=none is decided by medplum_auth.authorization, which knows the session

    def validate_silent_authorization(self, request: Any) -> bool:
        return True

    def validate_user_match(self, id_token_hint: str, scopes: list[str], claims: Any, request: Any) -> bool:
        return True  # id_token_hint is checked against the session by medplum_auth.authorization

    def is_origin_allowed(self, client_id: str, origin: str, request: Any, *args: Any, **kwargs: Any) -> bool:
        client = request.client
        return bool(client and origin in client.allowed_origins.split())

