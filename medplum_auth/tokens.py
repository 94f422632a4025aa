"""JWT access tokens and ID tokens, signed with the database signing keys.

Access tokens follow RFC 9068 (header ``typ: at+jwt``) and carry Medplum's claims
(``client_id``, ``login_id``, ``profile``, ``scope``, ``username``) that ``@medplum/core`` reads.
ID tokens have ``typ: JWT`` and ``aud`` = the client id. Verification checks the header type,
so an ID token can never pass as an access token (RFC 8725 §2.8, §3.11); refresh tokens are
opaque and never JWTs.

Public keys and the active signer are cached per process for a short time: key rows are
immutable, and a rotated-out key stays published, so a stale cache costs nothing.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from . import keys
from .conf import auth_settings

ACCESS_TOKEN_TYPE = "at+jwt"
ID_TOKEN_TYPE = "JWT"
CACHE_SECONDS = 30
CLOCK_SKEW = 30

_lock = threading.Lock()
_signer: tuple[float, Any, jwk.JWK] | None = None
_public: dict[str, tuple[float, jwk.JWK | None, str]] = {}
_algorithms: tuple[float, list[str]] | None = None


class InvalidToken(Exception):
    """The token is malformed, unsigned by us, of the wrong type, expired or not yet valid."""


def clear_cache(**kwargs: Any) -> None:
    """Forget cached keys (connected to SigningKey saves; call after changing keys by hand)."""
    global _signer, _algorithms
    with _lock:
        _signer = None
        _algorithms = None
        _public.clear()


def _active_signer() -> tuple[Any, jwk.JWK]:
    global _signer
    now = time.monotonic()
    cached = _signer
    if cached and now - cached[0] < CACHE_SECONDS:
        return cached[1], cached[2]
    row = keys.get_active_key()
    if row is None:
        from .services import ensure_signing_key

        row = ensure_signing_key()
    key = keys.load_private_key(row)
    _signer = (now, row, key)
    return row, key


def _public_key(kid: str) -> tuple[jwk.JWK | None, str]:
    now = time.monotonic()
    cached = _public.get(kid)
    if cached and now - cached[0] < CACHE_SECONDS:
        return cached[1], cached[2]
    from .models import SigningKey

    row = SigningKey.objects.filter(kid=kid).exclude(status=SigningKey.Status.RETIRED).first()
    key = jwk.JWK(**row.public_jwk) if row else None
    algorithm = row.algorithm if row else ""
    if len(_public) > 64:
        _public.clear()
    _public[kid] = (now, key, algorithm)
    return key, algorithm


def published_algorithms() -> list[str]:
    """The ``alg`` of every published key (the JWK Set), cached like the keys themselves.

    Discovery advertises these; its responses are cacheable for minutes anyway, so a
    process-local copy that is at most ``CACHE_SECONDS`` old changes nothing for clients.
    """
    global _algorithms
    now = time.monotonic()
    cached = _algorithms
    if cached and now - cached[0] < CACHE_SECONDS:
        return cached[1]
    algorithms = sorted({key.get("alg", auth_settings.SIGNING_ALGORITHM) for key in keys.jwks()["keys"]})
    _algorithms = (now, algorithms)
    return algorithms


def sign(claims: dict[str, Any], typ: str = ID_TOKEN_TYPE) -> str:
    """Sign ``claims`` with the active key; the header carries ``alg``, ``kid`` and ``typ``."""
    row, key = _active_signer()
    token = jws.JWS(json.dumps(claims, separators=(",", ":")).encode())
    header = {"alg": row.algorithm, "kid": row.kid, "typ": typ}
    token.add_signature(key, alg=row.algorithm, protected=json.dumps(header, separators=(",", ":")))
    return token.serialize(compact=True)


def decode(token: str, typ: str, *, verify_exp: bool = True) -> dict[str, Any]:
    """Verify a compact JWS signed by one of our published keys and return its claims.

    Checks: three segments, a ``kid`` we publish, ``alg`` equal to that key's algorithm (no
    ``none``, no HS256 confusion), header ``typ``, signature, ``iss``, ``exp`` and ``nbf``.
    """
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16384:
        raise InvalidToken("not a compact JWS")
    try:
        parsed = jws.JWS()
        parsed.deserialize(token)
        header = parsed.jose_header
    except (JWException, ValueError, TypeError) as exc:
        raise InvalidToken("malformed token") from exc
    if not isinstance(header, dict) or header.get("typ") != typ:
        raise InvalidToken("wrong token type")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise InvalidToken("missing kid")
    key, algorithm = _public_key(kid)
    if key is None or header.get("alg") != algorithm:
        raise InvalidToken("unknown key")
    try:
        parsed.verify(key, alg=algorithm)
        claims = json.loads(parsed.payload)
    except (JWException, ValueError, TypeError) as exc:
        raise InvalidToken("bad signature") from exc
    if not isinstance(claims, dict) or claims.get("iss") != auth_settings.ISSUER:
        raise InvalidToken("wrong issuer")
    now = time.time()
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
        raise InvalidToken("bad time claims")
    if verify_exp and exp < now - CLOCK_SKEW:
        raise InvalidToken("expired")
    if nbf > now + CLOCK_SKEW:
        raise InvalidToken("not yet valid")
    return claims


def issue_access_token(
    *, subject: str, client_id: str, login_id: str, scope: str, profile: str | None, lifetime: int,
    extra: dict[str, Any] | None = None,
) -> str:
    """An RFC 9068 access token with Medplum's claims; ``aud`` is the issuer, as Medplum's."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": auth_settings.ISSUER,
        "sub": subject,
        "aud": auth_settings.ISSUER,
        "iat": now,
        "nbf": now,
        "exp": now + int(lifetime),
        "jti": str(uuid.uuid4()),
        "client_id": client_id,
        "login_id": login_id,
        "scope": scope,
        "username": subject,
    }
    if profile:
        claims["profile"] = profile
    if extra:
        claims.update(extra)
    return sign(claims, ACCESS_TOKEN_TYPE)


def verify_access_token(token: str) -> dict[str, Any]:
    """Claims of a valid access token; raises :class:`InvalidToken` for anything else."""
    claims = decode(token, ACCESS_TOKEN_TYPE)
    if claims.get("aud") != auth_settings.ISSUER or not isinstance(claims.get("login_id"), str):
        raise InvalidToken("not an access token")
    return claims
