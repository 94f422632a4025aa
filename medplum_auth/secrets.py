"""Client secrets: generation and keyed digests.

Client secrets are machine-generated with at least 256 bits of entropy, so a slow password
KDF (PBKDF2, ~0.4 s of CPU per check with Django 5.2's defaults) buys nothing against brute
force; an HMAC-SHA256 digest under a server-side key is enough and costs microseconds.
Only the digest is stored; the plaintext is returned once to whoever created it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _secrets

from django.conf import settings

from .conf import auth_settings

DIGEST_PREFIX = "hmac-sha256$"
_KEY_SALT = b"medplum_auth.client-secret"


def generate_client_secret() -> str:
    """A new random secret: ``CLIENT_SECRET_BYTES`` bytes as lowercase hex (Medplum's format)."""
    return _secrets.token_hex(max(32, int(auth_settings.CLIENT_SECRET_BYTES)))


def _digest_keys() -> list[bytes]:
    """The current digest key first, then keys from ``SECRET_KEY_FALLBACKS``."""
    configured = auth_settings.CLIENT_SECRET_DIGEST_KEY
    if configured:
        return [hashlib.sha256(_KEY_SALT + str(configured).encode()).digest()]
    candidates = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return [hashlib.sha256(_KEY_SALT + str(key).encode()).digest() for key in candidates]


def _digest(secret: str, key: bytes) -> str:
    return DIGEST_PREFIX + hmac.new(key, secret.encode("utf-8"), hashlib.sha256).hexdigest()


def digest_client_secret(secret: str) -> str:
    """The stored form of ``secret``: ``hmac-sha256$<64 hex>`` under the current key."""
    return _digest(secret, _digest_keys()[0])


def verify_client_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches the stored digest, in constant time.

    Empty values never match. Digests made under a ``SECRET_KEY_FALLBACKS`` key still
    verify, so rotating ``SECRET_KEY`` does not lock every confidential client out.
    """
    if not secret or not stored or not stored.startswith(DIGEST_PREFIX):
        return False
    matched = False
    for key in _digest_keys():
        # Compare against every key so that timing does not reveal which one matched.
        matched |= hmac.compare_digest(_digest(secret, key), stored)
    return matched
