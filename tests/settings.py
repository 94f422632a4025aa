"""Test settings: the example site with a fixed key and a fast password hasher."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-" + "x" * 32)

from config.settings import *  # noqa: E402,F403

# Speed only; the site uses Argon2id (tests/oauth/test_password_hashing.py tests the real hashers).
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDPLUM_AUTH = {**MEDPLUM_AUTH, "RSA_KEY_SIZE": 2048}  # noqa: F405
STATIC_ROOT = None  # whitenoise: no collected files in tests
# Binary content: one directory per pytest process, shared with its e2e server (same environment).
MEDIA_ROOT = os.environ.setdefault("MEDIA_ROOT", os.path.join(tempfile.gettempdir(), f"medplum-media-{os.getpid()}"))

# The e2e tests' server process (tests/e2e) must reach the test database: a file, not memory.
# One file per pytest process, so sessions running side by side do not share it.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.gettempdir(), f"medplum-test-{os.getpid()}.sqlite3")}
