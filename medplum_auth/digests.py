"""Lookup digests of the random values the server hands out (codes, refresh tokens).

At the bottom of the package (no models, no protocol): the protocol, the login service and the
hot-path lookups all compute them.
"""

from __future__ import annotations

import hashlib


def token_digest(value: str) -> str:
    """Codes and refresh tokens are ≥ 170 random bits, so an unkeyed SHA-256 is a safe lookup key."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
