"""DPoP proofs (RFC 9449): checked at the token and PAR endpoints and by the resource servers.

A proof is a JWS the client signs with its own key for one HTTP request; the key's RFC 7638
thumbprint (``jkt``) is what tokens are bound to (``cnf.jkt``). :func:`verify` makes every check
of RFC 9449 §4.3 and answers a :class:`Proof`, or raises :class:`DPoPError` with the error code
the endpoint answers (``invalid_dpop_proof``, or ``use_dpop_nonce`` with a fresh nonce).

Replays are refused through Django's cache (one ``add`` per proof, keyed by the key and ``jti``),
so instances that share a cache (``REDIS_URL``) refuse a proof replayed at any of them. Server
nonces (§8, §9; ``DPOP_NONCE_REQUIRED``) are stateless: an HMAC of the current time window under
``SECRET_KEY``, so every instance issues and accepts the same ones without storing anything.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.cache import cache
from django.utils.crypto import salted_hmac

from . import jsonbody, jws
from .conf import auth_settings

PROOF_TYPE = "dpop+jwt"
#: Algorithms a proof may be signed with (advertised as ``dpop_signing_alg_values_supported``).
ALGORITHMS = ("ES256", "ES384", "PS256", "RS256")
_CURVES = {"ES256": ("P-256", ec.SECP256R1), "ES384": ("P-384", ec.SECP384R1)}
MIN_RSA_BITS = 2048
MAX_PROOF_LENGTH = 8192
#: Seconds a proof's ``iat`` may lie in the future (the client's clock ahead of ours).
CLOCK_SKEW = 30
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

_keys_lock = threading.Lock()
_keys: dict[str, Any] = {}  # jkt → cryptography public key: clients sign every request with the same key
_KEYS_MAX = 1024


class DPoPError(Exception):
    """RFC 9449 §5 (token endpoint, 400) and §7.1 (resource server, 401) errors."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error
        self.description = description

    @property
    def nonce(self) -> str | None:
        """The nonce to send in ``DPoP-Nonce`` with this error (only for ``use_dpop_nonce``)."""
        return current_nonce() if self.error == "use_dpop_nonce" else None


@dataclass(frozen=True)
class Proof:
    """A verified proof: the thumbprint of the key that signed it, and its ``jti``."""

    jkt: str
    jti: str


def invalid(description: str) -> DPoPError:
    return DPoPError("invalid_dpop_proof", description)


def thumbprint(public_jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK SHA-256 thumbprint: the required members, sorted, no whitespace."""
    kty = public_jwk.get("kty")
    members = ("crv", "kty", "x", "y") if kty == "EC" else ("e", "kty", "n")
    if kty not in ("EC", "RSA") or not all(isinstance(public_jwk.get(m), str) for m in members):
        raise invalid("The proof's jwk is not a complete EC or RSA public key.")
    canonical = jws.compact_json({m: public_jwk[m] for m in members})
    return jws.b64encode(hashlib.sha256(canonical).digest())


def valid_thumbprint(value: object) -> bool:
    """A well-formed SHA-256 JWK thumbprint (43 base64url characters), e.g. ``dpop_jkt``."""
    if not isinstance(value, str) or len(value) != 43:
        return False
    try:
        return len(jws.b64decode(value)) == 32
    except (ValueError, binascii.Error):
        return False


def _public_key(algorithm: str, public_jwk: dict[str, Any], jkt: str) -> Any:
    """The ``cryptography`` key of a proof's ``jwk``, of the type and size ``algorithm`` needs."""
    key = _keys.get(jkt)
    if key is None:
        try:
            if algorithm in _CURVES:
                name, curve = _CURVES[algorithm]
                if public_jwk.get("kty") != "EC" or public_jwk.get("crv") != name:
                    raise invalid(f"The proof's jwk is not a {name} key, as {algorithm} needs.")
                x, y = (int.from_bytes(jws.b64decode(public_jwk[m]), "big") for m in ("x", "y"))
                key = ec.EllipticCurvePublicNumbers(x, y, curve()).public_key()  # checks the point is on the curve
            else:
                if public_jwk.get("kty") != "RSA":
                    raise invalid(f"The proof's jwk is not an RSA key, as {algorithm} needs.")
                n, e = (int.from_bytes(jws.b64decode(public_jwk[m]), "big") for m in ("n", "e"))
                key = rsa.RSAPublicNumbers(e, n).public_key()
                if key.key_size < MIN_RSA_BITS:
                    raise invalid(f"The proof's RSA key is shorter than {MIN_RSA_BITS} bits.")
        except (ValueError, binascii.Error) as exc:
            raise invalid("The proof's jwk is not a valid public key.") from exc
        with _keys_lock:
            if len(_keys) >= _KEYS_MAX:
                _keys.clear()
            _keys[jkt] = key
    elif (algorithm in _CURVES) != isinstance(key, ec.EllipticCurvePublicKey):
        raise invalid(f"The proof's jwk does not suit {algorithm}.")
    return key


def normalized_uri(uri: str) -> str:
    """``uri`` without query and fragment, scheme and host lower-cased, default port dropped
    (RFC 9449 §4.3 step 9, RFC 3986 §6.2.2–6.2.3)."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return ""
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def access_token_hash(access_token: str) -> str:
    """``ath`` (RFC 9449 §4.2): base64url SHA-256 of the access token's ASCII."""
    return jws.b64encode(hashlib.sha256(access_token.encode("ascii", "replace")).digest())


def verify(proof: str | None, *, method: str, uris: tuple[str, ...] | list[str], access_token: str | None = None,
           now: float | None = None) -> Proof:
    """Check one proof for a request (RFC 9449 §4.3); raise :class:`DPoPError` otherwise.

    ``uris``: the URIs the request may have been sent to (this server's public and internal
    names of the same endpoint); ``htu`` must be one of them, compared normalized. With
    ``access_token`` the proof's ``ath`` must be that token's hash (§7).
    """
    if not isinstance(proof, str) or not proof:
        raise invalid("A DPoP proof is required.")
    if "," in proof:  # WSGI servers join repeated headers with commas; a JWS has none
        raise invalid("Send exactly one DPoP header.")
    if len(proof) > MAX_PROOF_LENGTH or proof.count(".") != 2:
        raise invalid("The DPoP proof is not a compact JWS.")
    header_segment, payload_segment, signature_segment = proof.split(".")
    try:
        header = jsonbody.loads(jws.b64decode(header_segment))
        claims = jsonbody.loads(jws.b64decode(payload_segment))
        signature = jws.b64decode(signature_segment)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise invalid("The DPoP proof is not a compact JWS.") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise invalid("The DPoP proof is not a compact JWS.")
    if header.get("typ") != PROOF_TYPE:
        raise invalid(f"The DPoP proof's typ must be {PROOF_TYPE}.")
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise invalid(f"Unsupported DPoP proof algorithm: use one of {', '.join(ALGORITHMS)}.")
    if "crit" in header:
        raise invalid("The DPoP proof has critical header parameters this server does not understand.")
    public_jwk = header.get("jwk")
    if not isinstance(public_jwk, dict):
        raise invalid("The DPoP proof's header has no jwk.")
    if _PRIVATE_MEMBERS & public_jwk.keys():
        raise invalid("The DPoP proof's jwk contains private key material.")
    jkt = thumbprint(public_jwk)
    key = _public_key(algorithm, public_jwk, jkt)
    try:
        jws.verify(key, algorithm, signature, f"{header_segment}.{payload_segment}".encode("ascii"))
    except jws.InvalidSignature as exc:
        raise invalid("The DPoP proof's signature does not verify with its jwk.") from exc

    jti, htm, htu, iat = claims.get("jti"), claims.get("htm"), claims.get("htu"), claims.get("iat")
    if not isinstance(jti, str) or not 0 < len(jti) <= 256:
        raise invalid("The DPoP proof has no valid jti.")
    if htm != method:
        raise invalid(f"The DPoP proof's htm is not this request's method ({method}).")
    if not isinstance(htu, str) or normalized_uri(htu) not in {normalized_uri(u) for u in uris}:
        raise invalid("The DPoP proof's htu is not this request's URI.")
    now = time.time() if now is None else now
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise invalid("The DPoP proof has no valid iat.")
    if iat > now + CLOCK_SKEW or iat < now - int(auth_settings.DPOP_PROOF_LIFETIME):
        raise invalid("The DPoP proof is too old or not yet valid: check the clock, make a new proof.")
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(ath, access_token_hash(access_token)):
            raise invalid("The DPoP proof's ath is not the hash of the access token sent with it.")
    if auth_settings.DPOP_NONCE_REQUIRED and not nonce_valid(claims.get("nonce"), now):
        raise DPoPError("use_dpop_nonce", "Authorization server requires nonce in DPoP proof.")
    # Last, so that only proofs that are otherwise good take a place in the cache.
    lifetime = int(auth_settings.DPOP_PROOF_LIFETIME) + 2 * CLOCK_SKEW
    replay_key = "medplum_auth:dpop:" + hashlib.sha256(f"{jkt}\n{jti}".encode()).hexdigest()
    if not cache.add(replay_key, 1, timeout=lifetime):
        raise invalid("The DPoP proof has been used before: make a new proof for every request.")
    return Proof(jkt=jkt, jti=jti)


# --- server nonces (RFC 9449 §8, §9) ---------------------------------------------------------


def _nonce_for(window: int) -> str:
    mac = salted_hmac("medplum_auth.dpop.nonce", str(window), algorithm="sha256").digest()[:16]
    return f"{window:x}.{jws.b64encode(mac)}"


def _window(now: float) -> int:
    return int(now // max(1, int(auth_settings.DPOP_NONCE_LIFETIME)))


def current_nonce(now: float | None = None) -> str:
    """The nonce to hand out now (``DPoP-Nonce``); it stays valid for one to two lifetimes."""
    return _nonce_for(_window(time.time() if now is None else now))


def nonce_valid(value: object, now: float | None = None) -> bool:
    """A nonce of this window or the previous one (constant-time comparison)."""
    if not isinstance(value, str) or len(value) > 64:
        return False
    window = _window(time.time() if now is None else now)
    return any(hmac.compare_digest(value, _nonce_for(w)) for w in (window, window - 1))


def request_uris(request: Any, path: str | None = None) -> tuple[str, ...]:
    """The URIs a request to ``path`` on this server may have been signed for: as Django sees the
    request, and under the public ``ISSUER`` and FHIR base origins (behind a proxy they differ)."""
    path = request.path if path is None else path
    uris = [request.build_absolute_uri(path)]
    for base in (auth_settings.ISSUER, auth_settings.fhir_base_url):
        parts = urlsplit(base)
        uris.append(urlunsplit((parts.scheme, parts.netloc, path, "", "")))
    return tuple(uris)
