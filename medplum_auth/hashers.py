"""Password hashing: Argon2id at OWASP's parameters (Password Storage Cheat Sheet, 2023+).

Django's own ``Argon2PasswordHasher`` uses 100 MiB and 8 lanes per hash; on a small server that
is slower than needed for the protection OWASP asks for, and 8 lanes on 2 cores only queue.
OWASP's minimum for Argon2id is memory 19 MiB, time cost 2, parallelism 1 (equivalent options:
46 MiB × 1, 12 MiB × 3, …). This hasher uses exactly that, keeps Django's algorithm name
``argon2`` and its encoding (so Django's hasher and this one verify each other's hashes; a hash
with other parameters is re-hashed on the next successful sign-in through ``must_update``).

Put it first in ``PASSWORD_HASHERS``; keep the hashers of existing hashes after it (Django's
PBKDF2 by default): they still verify, and Django re-hashes with the first hasher on the next
successful sign-in.
"""

from __future__ import annotations

from django.contrib.auth.hashers import Argon2PasswordHasher


class Argon2idPasswordHasher(Argon2PasswordHasher):
    """Argon2id, memory 19 MiB, time cost 2, parallelism 1 (OWASP's minimum for Argon2id)."""

    time_cost = 2
    memory_cost = 19 * 1024  # KiB
    parallelism = 1

