from __future__ import annotations

import hmac
import re

import pytest
from django.test import override_settings

from medplum_auth.secrets import DIGEST_PREFIX, digest_client_secret, generate_client_secret, verify_client_secret

HEX64 = re.compile(r"[0-9a-f]{64}\Z")
OLD_KEY = "old-secret-key-" + "o" * 40
NEW_KEY = "new-secret-key-" + "n" * 40


@pytest.mark.spec("RFC 6749 §10.10")
def test_generated_secret_is_256_bits_of_lowercase_hex():
    secret = generate_client_secret()
    assert HEX64.match(secret)
    assert len(bytes.fromhex(secret)) * 8 >= 256


@pytest.mark.spec("RFC 6749 §10.10")
def test_generated_secrets_are_unique():
    secrets = {generate_client_secret() for _ in range(200)}
    assert len(secrets) == 200


@pytest.mark.parametrize(("configured", "length"), [(16, 64), (32, 64), (48, 96)])
def test_secret_length_follows_setting_but_never_below_256_bits(configured, length):
    with override_settings(MEDPLUM_AUTH={"CLIENT_SECRET_BYTES": configured}):
        secret = generate_client_secret()
    assert len(secret) == length
    assert re.fullmatch(r"[0-9a-f]+", secret)


def test_digest_format():
    digest = digest_client_secret("s3cret")
    assert DIGEST_PREFIX == "hmac-sha256$"
    assert digest.startswith("hmac-sha256$")
    assert HEX64.match(digest.removeprefix("hmac-sha256$"))
    assert "s3cret" not in digest


def test_digest_is_deterministic_and_distinguishes_secrets():
    assert digest_client_secret("a") == digest_client_secret("a")
    assert digest_client_secret("a") != digest_client_secret("b")


@pytest.mark.spec("RFC 6749 §2.3.1")
def test_verify_true_and_false():
    secret = generate_client_secret()
    stored = digest_client_secret(secret)
    assert verify_client_secret(secret, stored) is True
    assert verify_client_secret(secret.upper(), stored) is False
    assert verify_client_secret(secret[:-1], stored) is False
    assert verify_client_secret(generate_client_secret(), stored) is False


def test_empty_values_never_match():
    assert verify_client_secret("", digest_client_secret("")) is False
    assert verify_client_secret("x", "") is False
    assert verify_client_secret("", "") is False
    assert verify_client_secret(None, digest_client_secret("x")) is False  # type: ignore[arg-type]


def test_stored_value_without_digest_prefix_never_matches():
    digest = digest_client_secret("x")
    assert verify_client_secret("x", digest.removeprefix(DIGEST_PREFIX)) is False
    # A legacy plaintext column must not be compared as if it were a digest.
    assert verify_client_secret("x", "x") is False


def test_digest_changes_with_digest_key():
    with override_settings(MEDPLUM_AUTH={"CLIENT_SECRET_DIGEST_KEY": "digest-key-one-" + "1" * 40}):
        one = digest_client_secret("s3cret")
        assert verify_client_secret("s3cret", one)
    with override_settings(MEDPLUM_AUTH={"CLIENT_SECRET_DIGEST_KEY": "digest-key-two-" + "2" * 40}):
        two = digest_client_secret("s3cret")
        assert verify_client_secret("s3cret", two)
        assert not verify_client_secret("s3cret", one)
    assert one != two
    assert digest_client_secret("s3cret") not in {one, two}


def test_digest_key_makes_secret_key_irrelevant():
    with override_settings(MEDPLUM_AUTH={"CLIENT_SECRET_DIGEST_KEY": "digest-key-" + "k" * 40}, SECRET_KEY=OLD_KEY):
        stored = digest_client_secret("s3cret")
    with override_settings(MEDPLUM_AUTH={"CLIENT_SECRET_DIGEST_KEY": "digest-key-" + "k" * 40}, SECRET_KEY=NEW_KEY,
                           SECRET_KEY_FALLBACKS=[]):
        assert verify_client_secret("s3cret", stored)


def test_old_secret_key_digest_verifies_only_while_in_fallbacks():
    with override_settings(MEDPLUM_AUTH={}, SECRET_KEY=OLD_KEY, SECRET_KEY_FALLBACKS=[]):
        stored = digest_client_secret("s3cret")
    with override_settings(MEDPLUM_AUTH={}, SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY]):
        assert verify_client_secret("s3cret", stored) is True
        assert verify_client_secret("other", stored) is False
        # New digests are made under the new key.
        assert digest_client_secret("s3cret") != stored
    with override_settings(MEDPLUM_AUTH={}, SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[]):
        assert verify_client_secret("s3cret", stored) is False


def test_verify_uses_constant_time_compare_for_every_key(monkeypatch):
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("medplum_auth.secrets.hmac.compare_digest", counting)
    with override_settings(MEDPLUM_AUTH={}, SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY, "third-" + "t" * 40]):
        stored = digest_client_secret("s3cret")
        assert verify_client_secret("s3cret", stored) is True
    # Every key is compared, even after the first one matched, so timing does not tell which key matched.
    assert len(calls) == 3
    assert all(b == stored for _, b in calls)
    assert calls[0][0] == stored
