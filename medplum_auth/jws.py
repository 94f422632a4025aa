"""Compact JWS primitives (RFC 7515 §7.1, RFC 7518 §3) on ``cryptography``.

Shared by our own tokens (``medplum_auth.tokens``) and DPoP proofs (``medplum_auth.dpop``), which
are checked on every request that carries one: ``cryptography`` directly, because jwcrypto's
per-token object setup costs several times the signature check itself.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

__all__ = ["HASHES", "InvalidSignature", "b64encode", "b64decode", "compact_json", "sign", "verify"]

#: The JWS algorithms this module signs and verifies, with their digests.
HASHES: dict[str, type[hashes.HashAlgorithm]] = {"RS256": hashes.SHA256, "PS256": hashes.SHA256,
                                                 "ES256": hashes.SHA256, "ES384": hashes.SHA384}
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


def b64encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(segment: str) -> bytes:
    """Strict base64url without padding; ``ValueError`` for anything else."""
    if not _SEGMENT.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def compact_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _rsa_padding(algorithm: str) -> padding.AsymmetricPadding:
    if algorithm.startswith("PS"):  # RSASSA-PSS, MGF1 with the same hash, salt as long as the hash (§3.5)
        digest = HASHES[algorithm]()
        return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
    return padding.PKCS1v15()


def sign(key: Any, algorithm: str, signing_input: bytes) -> bytes:
    """The JWS signature of ``signing_input`` by a ``cryptography`` private key."""
    digest = HASHES[algorithm]()
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(signing_input, _rsa_padding(algorithm), digest)
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(digest)))
    size = (key.curve.key_size + 7) // 8  # JWS ECDSA signatures are R || S, fixed width (RFC 7518 §3.4)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def verify(key: Any, algorithm: str, signature: bytes, signing_input: bytes) -> None:
    """Raise ``InvalidSignature`` unless ``signature`` is ``key``'s over ``signing_input``.

    The key type must be the algorithm's (RSA for RS*/PS*, EC for ES*), so a key can never be used
    with an algorithm it was not made for.
    """
    digest = HASHES[algorithm]()
    if algorithm[:2] in ("RS", "PS"):
        if not isinstance(key, rsa.RSAPublicKey):
            raise InvalidSignature("not an RSA key")
        key.verify(signature, signing_input, _rsa_padding(algorithm), digest)
        return
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidSignature("not an EC key")
    size = (key.curve.key_size + 7) // 8
    if len(signature) != 2 * size:
        raise InvalidSignature("wrong ECDSA signature length")
    r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(digest))
