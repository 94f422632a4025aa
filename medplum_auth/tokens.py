"""JWT access tokens and ID tokens, signed with the database signing keys.

Access tokens follow RFC 9068 (header ``typ: at+jwt``) and carry Medplum's claims
(``client_id``, ``login_id``, ``profile``, ``scope``, ``username``) that ``@medplum/core`` reads.
ID tokens have ``typ: JWT`` and ``aud`` = the client id. Verification checks the header type,
so an ID token can never pass as an access token (RFC 8725 §2.8, §3.11); refresh tokens are
opaque and never JWTs.

Public keys and the active signer are cached per process for a short time: key rows are
immutable, and a rotated-out key stays published, so a stale cache costs nothing. A token whose
signature has been checked is remembered (by its SHA-256) for as long as the cached key it was
checked with: clients send the same access token with every API call, and the signature cannot
change; its type, issuer and lifetime are checked again on every use.

jwcrypto loads and exports the keys; the compact JWS itself (RFC 7515 §7.1) is built and
checked here with ``cryptography``, which jwcrypto uses underneath: jwcrypto's per-token object
setup cost several times the signature check itself on every API request.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import threading
import time
import uuid
from typing import Any

from jwcrypto import jwk

from . import jsonbody, jws, keys
from .conf import auth_settings
from .jws import InvalidSignature

ACCESS_TOKEN_TYPE = "at+jwt"
ID_TOKEN_TYPE = "JWT"
CACHE_SECONDS = 30
CLOCK_SKEW = 30


_lock = threading.Lock()
_signer: tuple[float, Any, Any] | None = None
_public: dict[str, tuple[float, Any, str]] = {}
_algorithms: tuple[float, list[str]] | None = None
VERIFIED_TOKENS_MAX = 4096
_verified: dict[bytes, tuple[str, str, tuple[float, Any, str], dict[str, Any]]] = {}


class InvalidToken(Exception):
    """The token is malformed, unsigned by us, of the wrong type, expired or not yet valid."""


def clear_cache(**kwargs: Any) -> None:
    """Forget cached keys (connected to SigningKey saves; call after changing keys by hand)."""
    global _signer, _algorithms
    with _lock:
        _signer = None
        _algorithms = None
        _public.clear()
        _verified.clear()
    keys.forget_jwks()


def _active_signer() -> tuple[Any, Any]:
    """``(SigningKey row, cryptography private key)`` of the active signer."""
    global _signer
    now = time.monotonic()
    cached = _signer
    if cached and now - cached[0] < CACHE_SECONDS:
        return cached[1], cached[2]
    row = keys.get_active_key()
    if row is None:
        from .services import ensure_signing_key

        row = ensure_signing_key()
    key = keys.load_private_key(row).get_op_key("sign")
    _signer = (now, row, key)
    return row, key


def _public_key(kid: str) -> tuple[float, Any, str]:
    """``(cached at, cryptography public key or None, algorithm)`` of a published key."""
    now = time.monotonic()
    cached = _public.get(kid)
    if cached and now - cached[0] < CACHE_SECONDS:
        return cached
    from .models import SigningKey

    row = SigningKey.objects.filter(kid=kid).exclude(status=SigningKey.Status.RETIRED).first()
    key = jwk.JWK(**row.public_jwk).get_op_key("verify") if row else None
    if len(_public) > 64:
        _public.clear()
    entry = _public[kid] = (now, key, row.algorithm if row else "")
    return entry


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
    header = {"alg": row.algorithm, "kid": row.kid, "typ": typ}
    signing_input = ".".join(jws.b64encode(jws.compact_json(part)) for part in (header, claims)).encode("ascii")
    return f"{signing_input.decode('ascii')}.{jws.b64encode(jws.sign(key, row.algorithm, signing_input))}"


def decode(token: str, typ: str, *, verify_exp: bool = True) -> dict[str, Any]:
    """Verify a compact JWS signed by one of our published keys and return its claims.

    Checks: three segments, a ``kid`` we publish, ``alg`` equal to that key's algorithm (no
    ``none``, no HS256 confusion), header ``typ``, signature, ``iss``, ``exp`` and ``nbf``.
    """
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16384:
        raise InvalidToken("not a compact JWS")
    claims = _signed_claims(token, typ)
    if claims.get("iss") != auth_settings.ISSUER:
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


def _signed_claims(token: str, typ: str) -> dict[str, Any]:
    """The claims of a token of type ``typ`` whose signature verifies (a copy: callers may edit it)."""
    digest = hashlib.sha256(token.encode()).digest()
    seen = _verified.get(digest)
    if seen is not None:
        seen_typ, kid, entry, claims = seen
        # Only while the key it was checked with is still the cached, unexpired one.
        if seen_typ == typ and _public.get(kid) is entry and time.monotonic() - entry[0] < CACHE_SECONDS:
            return dict(claims)
    header_segment, payload_segment, signature_segment = token.split(".")
    try:
        header = jsonbody.loads(jws.b64decode(header_segment))  # unverified: bounded
        signature = jws.b64decode(signature_segment)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidToken("malformed token") from exc
    if not isinstance(header, dict) or header.get("typ") != typ:
        raise InvalidToken("wrong token type")
    if "crit" in header:  # we never issue extensions, so none can be understood (RFC 7515 §4.1.11)
        raise InvalidToken("unsupported critical header")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise InvalidToken("missing kid")
    entry = _public_key(kid)
    _, key, algorithm = entry
    if key is None or header.get("alg") != algorithm or algorithm not in jws.HASHES:
        raise InvalidToken("unknown key")
    try:
        jws.verify(key, algorithm, signature, f"{header_segment}.{payload_segment}".encode("ascii"))
        claims = json.loads(jws.b64decode(payload_segment))
    except (InvalidSignature, ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidToken("bad signature") from exc
    if not isinstance(claims, dict):
        raise InvalidToken("bad claims")
    if len(_verified) >= VERIFIED_TOKENS_MAX:
        _verified.clear()
    _verified[digest] = (typ, kid, entry, claims)
    return dict(claims)


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
