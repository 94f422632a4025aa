"""Token signing keys, kept in the database so every app instance shares them.

Private keys are encrypted at rest with Fernet under a key derived from
``KEY_ENCRYPTION_SECRET`` (default: ``SECRET_KEY``, with ``SECRET_KEY_FALLBACKS`` tried on
decryption). Decrypted keys are immutable, so they are cached per process by ``kid``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from jwcrypto import jwk

from .conf import auth_settings

ALGORITHMS: dict[str, dict[str, Any]] = {
    "RS256": {"kty": "RSA"},
    "ES256": {"kty": "EC", "crv": "P-256"},
    "ES384": {"kty": "EC", "crv": "P-384"},
}
_FERNET_SALT = b"medplum_auth.signing-key"


def _fernet(salt: bytes = _FERNET_SALT) -> MultiFernet:
    configured = auth_settings.KEY_ENCRYPTION_SECRET
    secrets = [configured] if configured else [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([
        Fernet(base64.urlsafe_b64encode(hashlib.sha256(salt + str(s).encode()).digest())) for s in secrets
    ])


def encrypt_secret(value: str, purpose: str) -> str:
    """Encrypt a small secret at rest (a TOTP seed …) under the key that protects signing keys,
    separated by ``purpose`` so one kind of ciphertext can never be passed off as another."""
    return _fernet(f"medplum_auth.{purpose}".encode()).encrypt(value.encode()).decode("ascii")


def decrypt_secret(value: str, purpose: str) -> str:
    """The plaintext of :func:`encrypt_secret`; ``ImproperlyConfigured`` when no known key opens it."""
    try:
        return _fernet(f"medplum_auth.{purpose}".encode()).decrypt(value.encode("ascii")).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            f"A stored {purpose} cannot be decrypted: KEY_ENCRYPTION_SECRET / SECRET_KEY changed without keeping "
            "the old value in SECRET_KEY_FALLBACKS.") from None


def generate_key(algorithm: str) -> tuple[jwk.JWK, str]:
    """A new private key for ``algorithm`` and its encrypted PEM; ``kid`` is the RFC 7638 thumbprint."""
    if algorithm not in ALGORITHMS:
        raise ImproperlyConfigured(f"Unsupported signing algorithm {algorithm!r}; use one of {sorted(ALGORITHMS)}.")
    params = dict(ALGORITHMS[algorithm])
    if params["kty"] == "RSA":
        params["size"] = int(auth_settings.RSA_KEY_SIZE)
    key = jwk.JWK.generate(**params)
    kid = key.thumbprint()
    key = jwk.JWK(**{**key.export(as_dict=True), "kid": kid, "alg": algorithm, "use": "sig"})
    pem = key.export_to_pem(private_key=True, password=None)
    return key, _fernet().encrypt(pem).decode("ascii")


def public_jwk(key: jwk.JWK) -> dict[str, Any]:
    return key.export_public(as_dict=True)


@lru_cache(maxsize=32)
def _load(kid: str, algorithm: str, encrypted: str) -> jwk.JWK:
    try:
        pem = _fernet().decrypt(encrypted.encode("ascii"))
    except InvalidToken:
        raise ImproperlyConfigured(
            f"Signing key {kid} cannot be decrypted: KEY_ENCRYPTION_SECRET / SECRET_KEY changed "
            "without keeping the old value in SECRET_KEY_FALLBACKS."
        ) from None
    key = jwk.JWK.from_pem(pem)
    return jwk.JWK(**{**key.export(as_dict=True), "kid": kid, "alg": algorithm, "use": "sig"})


def load_private_key(signing_key: Any) -> jwk.JWK:
    """The private JWK of a :class:`~medplum_auth.models.SigningKey` row."""
    return _load(signing_key.kid, signing_key.algorithm, signing_key.private_key)


def get_active_key() -> Any | None:
    """The active :class:`SigningKey`, or ``None`` when there is none."""
    from .models import SigningKey

    return SigningKey.objects.filter(status=SigningKey.Status.ACTIVE).first()


def jwks() -> dict[str, list[dict[str, Any]]]:
    """The public JWK Set (RFC 7517 §5): the active key and every inactive, unretired key."""
    from .models import SigningKey

    rows = SigningKey.objects.exclude(status=SigningKey.Status.RETIRED).order_by("-created")
    return {"keys": [row.public_jwk for row in rows]}


#: Seconds a process serves its JWK Set from memory before checking :func:`key_version` again.
JWKS_CHECK_SECONDS = 30

_jwks_lock = threading.Lock()
_jwks_memory: tuple[float, tuple[Any, ...], bytes] | None = None


def key_version() -> tuple[Any, ...]:
    """A value that changes whenever the published key set can have changed: a rotation adds a
    row (newest ``created``), a retirement sets ``retired_at``, a deletion lowers the count.
    One aggregate over the (tiny) key table, no key material read."""
    from django.db.models import Count, Max

    from .models import SigningKey

    found = SigningKey.objects.aggregate(n=Count("pk"), created=Max("created"), retired=Max("retired_at"))
    return found["n"], found["created"], found["retired"]


def jwks_document() -> bytes:
    """The JWK Set as JSON bytes, from memory.

    Every instance serves its own copy and, at most every :data:`JWKS_CHECK_SECONDS`, compares
    :func:`key_version` with the copy's (one cheap query); it rebuilds when they differ, so a rotation
    or retirement made anywhere (CLI, admin, another instance) is served everywhere within that time.
    A change made in this process (``SigningKey`` saved or deleted) is served at once
    (:func:`forget_jwks`, connected to those signals through ``tokens.clear_cache``).
    """
    global _jwks_memory
    now = time.monotonic()
    memory = _jwks_memory
    if memory is not None and now - memory[0] < JWKS_CHECK_SECONDS:
        return memory[2]
    version = key_version()
    if memory is not None and memory[1] == version:
        body = memory[2]
    else:
        body = json.dumps(jwks(), separators=(",", ":")).encode()
    with _jwks_lock:
        _jwks_memory = (now, version, body)
    return body


def forget_jwks() -> None:
    global _jwks_memory
    with _jwks_lock:
        _jwks_memory = None
