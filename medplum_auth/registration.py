"""Dynamic client registration (RFC 7591) and its management protocol (RFC 7592).

A client is registered into the project of the initial access token it presents (issued by a
project admin: Project Admin or ``medplum_create_registration_token``); open registration is off
unless ``OPEN_CLIENT_REGISTRATION`` names a project. Metadata is validated as strictly as a
client created by hand (exact redirect URIs, ``https`` except loopback), and the answer carries a
``registration_access_token`` for ``/oauth2/register/<client_id>`` (read, update, delete). Only
SHA-256 digests of both tokens are stored.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from jwcrypto import jwk
from jwcrypto.common import JWException

from . import services
from .conf import auth_settings
from .models import ClientApplication, Project, RegistrationToken
from .validators import validate_redirect_uris

AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post", "private_key_jwt", "none"})
GRANT_TYPES = frozenset({"authorization_code", "refresh_token", "client_credentials"})
#: Largest registration request body (bytes); metadata this server does not keep is ignored (RFC 7591 §2).
MAX_BODY = 64 * 1024


class RegistrationError(Exception):
    """An RFC 7591 §3.2.2 error: ``invalid_redirect_uri``, ``invalid_client_metadata`` …"""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Grant:
    """Where a registration lands: the project, and the policy its clients get."""

    project: Project
    access_policy: Any
    #: The initial access token's row (``None`` for open registration), for the audit trail.
    token_id: int | None = None


def authorize_registration(bearer: str | None) -> Grant:
    """The project an initial access token registers into; ``invalid_token`` (401) if none."""
    if not bearer:
        project = _open_project()
        if project is not None:
            return Grant(project, None)
        raise RegistrationError("invalid_token", "An initial access token is required.", 401)
    row = (RegistrationToken.objects.select_related("project", "access_policy")
           .filter(digest=_digest(bearer), revoked_at__isnull=True, project__active=True)
           .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())).first())
    if row is None:
        raise RegistrationError("invalid_token", "The initial access token is unknown, expired or revoked.", 401)
    return Grant(row.project, row.access_policy, row.pk)


def _open_project() -> Project | None:
    """The active project ``OPEN_CLIENT_REGISTRATION`` names, if any (a malformed id names none: W016)."""
    try:
        project_id = uuid.UUID(str(auth_settings.OPEN_CLIENT_REGISTRATION))
    except ValueError:
        return None
    return Project.objects.filter(pk=project_id, active=True).first()


def _strings(data: dict[str, Any], name: str) -> list[str]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise RegistrationError("invalid_client_metadata", f"{name} must be an array of strings.")
    return value


def _has_control_characters(value: Any) -> bool:
    """Whether a string, or any key or string in JSON ``value``, holds one (PostgreSQL cannot store NUL)."""
    if isinstance(value, str):
        return any(ord(ch) < 32 or ord(ch) == 127 for ch in value)
    if isinstance(value, dict):
        return any(_has_control_characters(k) or _has_control_characters(v) for k, v in value.items())
    return isinstance(value, list) and any(_has_control_characters(item) for item in value)


def _check_jwks(jwks: Any) -> None:
    """A registered JWKS holds at least one public RSA or EC signing key and nothing secret.

    Checked here, not only when an assertion arrives: a private or symmetric key sent by mistake
    must not be stored (RFC 7591 §2: ``jwks`` holds the client's public keys), nor one no
    assertion could ever be verified with.
    """
    if not (isinstance(jwks, dict) and isinstance(jwks.get("keys"), list) and jwks["keys"]):
        raise RegistrationError("invalid_client_metadata", "jwks must be a JSON Web Key Set with at least one key.")
    if _has_control_characters(jwks):
        raise RegistrationError("invalid_client_metadata", "jwks must not contain control characters.")
    for value in jwks["keys"]:
        try:
            key = jwk.JWK(**value) if isinstance(value, dict) else None
        except (JWException, ValueError, TypeError):
            key = None
        if key is None or key.get("kty") not in {"RSA", "EC"}:
            raise RegistrationError("invalid_client_metadata", "jwks keys must be valid RSA or EC keys (RFC 7517).")
        if key.has_private:
            raise RegistrationError("invalid_client_metadata", "jwks must hold public keys only: never send a "
                                    "private key.")


def clean_metadata(data: Any) -> dict[str, Any]:
    """Validated client metadata (RFC 7591 §2) with this server's defaults filled in."""
    if not isinstance(data, dict):
        raise RegistrationError("invalid_client_metadata", "The body must be a JSON object.")
    if "software_statement" in data:
        raise RegistrationError("invalid_software_statement", "Software statements are not supported.")
    method = data.get("token_endpoint_auth_method", "client_secret_basic")
    if not isinstance(method, str) or method not in AUTH_METHODS:
        raise RegistrationError("invalid_client_metadata", "Unsupported token_endpoint_auth_method.")
    grant_types = _strings(data, "grant_types") if "grant_types" in data else ["authorization_code"]
    response_types = _strings(data, "response_types") if "response_types" in data else (
        ["code"] if "authorization_code" in grant_types else [])
    if not set(grant_types) <= GRANT_TYPES:
        raise RegistrationError("invalid_client_metadata", "Unsupported grant_types: use authorization_code, "
                                "refresh_token or client_credentials.")
    if set(response_types) - {"code"}:
        raise RegistrationError("invalid_client_metadata", "Unsupported response_types: only code is supported.")
    if ("authorization_code" in grant_types) != ("code" in response_types):
        raise RegistrationError("invalid_client_metadata",
                                "grant_types authorization_code and response_types code go together (RFC 7591 §2.1).")
    if method == "none" and "client_credentials" in grant_types:
        raise RegistrationError("invalid_client_metadata", "client_credentials needs client authentication.")
    redirect_uris = _strings(data, "redirect_uris") if "redirect_uris" in data else []
    if "authorization_code" in grant_types and not redirect_uris:
        raise RegistrationError("invalid_redirect_uri", "redirect_uris is required for the authorization_code grant.")
    post_logout = _strings(data, "post_logout_redirect_uris") if "post_logout_redirect_uris" in data else []
    try:
        validate_redirect_uris(redirect_uris)
        validate_redirect_uris(post_logout, "Post-logout redirect URI")
    except ValidationError as exc:
        raise RegistrationError("invalid_redirect_uri", " ".join(exc.messages)) from None
    jwks, jwks_uri = data.get("jwks"), data.get("jwks_uri", "")
    if method == "private_key_jwt":
        if bool(jwks) == bool(jwks_uri):
            raise RegistrationError("invalid_client_metadata",
                                    "private_key_jwt needs exactly one of jwks and jwks_uri.")
    elif jwks or jwks_uri:
        raise RegistrationError("invalid_client_metadata", "jwks and jwks_uri are only for private_key_jwt.")
    if jwks is not None:
        _check_jwks(jwks)
    if not isinstance(jwks_uri, str) or (jwks_uri and not jwks_uri.startswith("https://")) or (
            _has_control_characters(jwks_uri)):
        raise RegistrationError("invalid_client_metadata", "jwks_uri must be an https URL.")
    alg = data.get("id_token_signed_response_alg", auth_settings.SIGNING_ALGORITHM)
    if alg != auth_settings.SIGNING_ALGORITHM:
        raise RegistrationError("invalid_client_metadata",
                                f"Unsupported id_token_signed_response_alg: ID tokens are signed with "
                                f"{auth_settings.SIGNING_ALGORITHM}.")
    dpop_bound = data.get("dpop_bound_access_tokens", False)
    if not isinstance(dpop_bound, bool):
        raise RegistrationError("invalid_client_metadata", "dpop_bound_access_tokens must be a boolean.")
    name = data.get("client_name", "")
    if not isinstance(name, str) or len(name) > 255 or _has_control_characters(name):
        raise RegistrationError("invalid_client_metadata",
                                "client_name must be a string of at most 255 characters, no control characters.")
    return {
        "client_name": name.strip() or "Registered client",
        "redirect_uris": redirect_uris,
        "post_logout_redirect_uris": post_logout,
        "grant_types": grant_types,
        "response_types": response_types,
        "token_endpoint_auth_method": method,
        "id_token_signed_response_alg": alg,
        "dpop_bound_access_tokens": dpop_bound,
        **({"jwks": jwks} if jwks else {}),
        **({"jwks_uri": jwks_uri} if jwks_uri else {}),
    }


#: Registered metadata the model has no field for, kept as sent for RFC 7592 reads.
KEPT_METADATA = ("grant_types", "response_types", "token_endpoint_auth_method")


def _fields(metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "redirect_uris": metadata["redirect_uris"],
        "post_logout_redirect_uris": metadata["post_logout_redirect_uris"],
        "jwks": metadata.get("jwks"),
        "jwks_uri": metadata.get("jwks_uri", ""),
        "dpop_bound_access_tokens": metadata["dpop_bound_access_tokens"],
        "registered_metadata": {name: metadata[name] for name in KEPT_METADATA},
    }


def _invalid(exc: ValidationError) -> RegistrationError:
    return RegistrationError("invalid_client_metadata", " ".join(exc.messages))


@transaction.atomic
def register(grant: Grant, metadata: dict[str, Any]) -> dict[str, Any]:
    """Create the client; the RFC 7591 §3.2.1 answer (with its secret and management token, once)."""
    public = metadata["token_endpoint_auth_method"] == "none"
    token = secrets.token_urlsafe(32)
    fields = _fields(metadata)
    try:
        client, secret = services.create_client(
            grant.project, metadata["client_name"], redirect_uris=fields.pop("redirect_uris"), public=public,
            access_policy=grant.access_policy, description="Registered through /oauth2/register (RFC 7591).",
            registration_source="dcr", registration_access_digest=_digest(token),
            audit_detail={"registration": "RFC 7591", "registration_token": (
                f"RegistrationToken/{grant.token_id}" if grant.token_id else None)}, **fields)
    except ValidationError as exc:
        raise _invalid(exc) from None
    body = describe(client, metadata)
    body.update(client_id_issued_at=int(client.created.timestamp()), registration_access_token=token)
    if secret and metadata["token_endpoint_auth_method"].startswith("client_secret_"):
        body.update(client_secret=secret, client_secret_expires_at=0)
    return body


def managed_client(client_id: str, bearer: str | None) -> ClientApplication:
    """The client a registration access token manages (RFC 7592 §2); 401 ``invalid_token`` else."""
    client = (ClientApplication.objects.filter(client_id=client_id).exclude(registration_access_digest="").first()
              if bearer else None)
    if client is None or not secrets.compare_digest(client.registration_access_digest, _digest(bearer or "")):
        raise RegistrationError("invalid_token", "The registration access token is invalid for this client.", 401)
    return client


def stored_metadata(client: ClientApplication) -> dict[str, Any]:
    """The client's metadata as registered and since edited (RFC 7592 §2.1).

    Grant and response types and the authentication method are what the client registered; for
    a client registered before they were kept, what its type allows.
    """
    if client.is_confidential:
        method = "private_key_jwt" if (client.jwks or client.jwks_uri) else "client_secret_basic"
        grants = ["authorization_code", "refresh_token", "client_credentials"]
    else:
        method, grants = "none", ["authorization_code", "refresh_token"]
    kept = {"grant_types": grants, "response_types": ["code"], "token_endpoint_auth_method": method,
            **(client.registered_metadata or {})}
    return {
        "client_name": client.name,
        "redirect_uris": client.redirect_uris.split(),
        "post_logout_redirect_uris": client.post_logout_redirect_uris.split(),
        **{name: kept[name] for name in KEPT_METADATA},
        "id_token_signed_response_alg": auth_settings.SIGNING_ALGORITHM,
        "dpop_bound_access_tokens": client.dpop_bound_access_tokens,
        **({"jwks": client.jwks} if client.jwks else {}),
        **({"jwks_uri": client.jwks_uri} if client.jwks_uri else {}),
    }


def describe(client: ClientApplication, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        **(metadata or stored_metadata(client)),
        "registration_client_uri": f"{auth_settings.ISSUER}/oauth2/register/{client.client_id}",
    }


def update(client: ClientApplication, data: Any) -> dict[str, Any]:
    """RFC 7592 §2.2: replace the client's metadata; its id, type and secret stay."""
    if not isinstance(data, dict) or data.get("client_id") != client.client_id:
        raise RegistrationError("invalid_client_metadata", "The body must name this client's client_id.")
    secret = data.get("client_secret")
    if secret is not None and not (isinstance(secret, str) and client.verify_secret(secret)):
        raise RegistrationError("invalid_client_metadata", "client_secret does not match.")
    forbidden = {"registration_access_token", "registration_client_uri", "client_secret_expires_at",
                 "client_id_issued_at"} & set(data)
    if forbidden:
        raise RegistrationError("invalid_client_metadata", f"{sorted(forbidden)[0]} cannot be set.")
    metadata = clean_metadata({k: v for k, v in data.items() if k not in {"client_id", "client_secret"}})
    if (metadata["token_endpoint_auth_method"] == "none") != (not client.is_confidential):
        raise RegistrationError("invalid_client_metadata",
                                "token_endpoint_auth_method cannot change between public and confidential.")
    try:
        services.update_client(client, name=metadata["client_name"], **_fields(metadata))
    except ValidationError as exc:
        raise _invalid(exc) from None
    return describe(client, metadata)
