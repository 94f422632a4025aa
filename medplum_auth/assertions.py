"""``private_key_jwt`` client authentication (RFC 7523 §2.2, §3; OIDC Core §9; SMART Backend Services).

The assertion is a JWT signed with one of the client's keys (inline JWKS or ``jwks_uri``) with
``iss`` = ``sub`` = client id, ``aud`` = our token endpoint, ``exp`` at most five minutes ahead
and a ``jti`` that is accepted once. At the PAR endpoint ``aud`` may also be the issuer or the PAR
endpoint itself (RFC 9126 §2: the server MUST accept all three there).
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from django.core.cache import cache
from django.db import IntegrityError, transaction
from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from . import jsonbody
from .conf import auth_settings
from .models import ClientApplication, UsedClientAssertion

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS256", "RS384", "ES256", "ES384")
MAX_LIFETIME = 300
CLOCK_SKEW = 30
JWKS_CACHE_SECONDS = 300


class AssertionError_(Exception):
    pass


def _unverified_claims(assertion: str) -> dict[str, Any]:
    try:
        payload = assertion.split(".")[1]
        padded = payload + "=" * (-len(payload) % 4)
        import base64

        claims = jsonbody.loads(base64.urlsafe_b64decode(padded))
    except (IndexError, ValueError):
        raise AssertionError_("malformed assertion") from None
    if not isinstance(claims, dict):
        raise AssertionError_("malformed assertion")
    return claims


def client_id_of(assertion: str) -> str | None:
    """The ``iss`` of an assertion, before verification, to find the client."""
    try:
        iss = _unverified_claims(assertion).get("iss")
    except AssertionError_:
        return None
    return iss if isinstance(iss, str) else None


def client_keys(client: ClientApplication) -> jwk.JWKSet:
    if client.jwks:
        try:
            return jwk.JWKSet.from_json(json.dumps(client.jwks))
        except (JWException, ValueError, TypeError):  # a malformed key the model let through: refused, never a 500
            raise AssertionError_("invalid JWKS") from None
    if not client.jwks_uri:
        raise AssertionError_("client has no JWKS")
    cache_key = f"medplum_auth:jwks:{hashlib.sha256(client.jwks_uri.encode()).hexdigest()}"
    text = cache.get(cache_key)
    if text is None:
        try:
            with urllib.request.urlopen(client.jwks_uri, timeout=5) as response:  # noqa: S310 - admin-registered URL
                text = response.read(256 * 1024).decode("utf-8")
        except (OSError, ValueError, UnicodeDecodeError):
            raise AssertionError_("cannot fetch the client's JWKS") from None
        cache.set(cache_key, text, JWKS_CACHE_SECONDS)
    try:
        return jwk.JWKSet.from_json(text)
    except (JWException, ValueError):
        raise AssertionError_("invalid JWKS") from None


def audiences_for(endpoint: str) -> set[str]:
    """The ``aud`` values that name this server for an assertion sent to ``endpoint`` (its URL)."""
    issuer = auth_settings.ISSUER
    accepted = {f"{issuer}/oauth2/token"}
    par_url = f"{issuer}/oauth2/par"
    if endpoint and urlsplit(endpoint).path == urlsplit(par_url).path:
        accepted |= {issuer, par_url}
    return accepted


def verify(assertion: str, client: ClientApplication, endpoint: str = "") -> None:
    """Raise :class:`AssertionError_` unless ``assertion`` authenticates ``client`` at ``endpoint``."""
    token = jws.JWS()
    try:
        token.deserialize(assertion)
        header = token.jose_header
    except (JWException, ValueError, RecursionError):  # jwcrypto parses the header with json.loads
        raise AssertionError_("malformed assertion") from None
    alg = header.get("alg") if isinstance(header, dict) else None
    if alg not in ALGORITHMS:
        raise AssertionError_("unsupported algorithm")
    keyset = client_keys(client)
    kid = header.get("kid")
    candidates = [k for k in keyset["keys"] if not kid or k.get("kid") == kid]
    for key in candidates:
        try:
            token.verify(key, alg=alg)
            break
        except (JWException, ValueError, TypeError):
            continue
    else:
        raise AssertionError_("bad signature")
    claims = json.loads(token.payload)
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise AssertionError_("iss and sub must be the client id")
    if not audiences_for(endpoint).intersection(a for a in audiences if isinstance(a, str)):
        raise AssertionError_("aud must be the token endpoint")
    now = time.time()
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp < now - CLOCK_SKEW or exp > now + MAX_LIFETIME + CLOCK_SKEW:
        raise AssertionError_("exp must be within five minutes")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise AssertionError_("missing jti")
    _use_jti(client, jti, exp)


def _use_jti(client: ClientApplication, jti: str, exp: float) -> None:
    digest = hashlib.sha256(f"{client.client_id}\x00{jti}".encode()).hexdigest()
    now = datetime.now(tz=UTC)
    UsedClientAssertion.objects.filter(expires_at__lt=now).delete()
    try:
        with transaction.atomic():
            UsedClientAssertion.objects.create(
                jti_digest=digest, expires_at=datetime.fromtimestamp(exp + CLOCK_SKEW, tz=UTC))
    except IntegrityError:
        raise AssertionError_("jti already used") from None
