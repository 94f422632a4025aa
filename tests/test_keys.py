from __future__ import annotations

import base64
import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from jwcrypto import jwk, jws

from medplum_auth import keys
from medplum_auth.models import SigningKey
from medplum_auth.services import rotate_signing_keys

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
OLD_KEY = "old-secret-key-" + "o" * 40
NEW_KEY = "new-secret-key-" + "n" * 40


@pytest.mark.spec("RFC 7518 §3.1")
@pytest.mark.parametrize(("algorithm", "kty", "crv"), [("RS256", "RSA", None), ("ES256", "EC", "P-256"),
                                                        ("ES384", "EC", "P-384")])
def test_generate_key(algorithm, kty, crv):
    key, encrypted = keys.generate_key(algorithm)
    public = keys.public_jwk(key)
    assert public["kty"] == kty
    assert public.get("crv") == crv
    assert public["alg"] == algorithm
    assert public["use"] == "sig"
    assert public["kid"] == key.thumbprint()  # RFC 7638 thumbprint
    assert not PRIVATE_MEMBERS & set(public)
    assert key.has_private
    assert isinstance(encrypted, str)
    assert "PRIVATE KEY" not in encrypted


def test_rsa_key_has_configured_size():
    key, _ = keys.generate_key("RS256")
    modulus = base64.urlsafe_b64decode(key.export_public(as_dict=True)["n"] + "==")
    assert len(modulus) * 8 == 2048


def test_generated_keys_are_distinct():
    a, _ = keys.generate_key("ES256")
    b, _ = keys.generate_key("ES256")
    assert a.thumbprint() != b.thumbprint()


@pytest.mark.parametrize("algorithm", ["HS256", "RS512", "none", ""])
def test_unsupported_algorithm(algorithm):
    with pytest.raises(ImproperlyConfigured) as exc:
        keys.generate_key(algorithm)
    assert str(exc.value) == (f"Unsupported signing algorithm {algorithm!r}; "
                              "use one of ['ES256', 'ES384', 'RS256'].")


@pytest.mark.django_db
@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_private_key_is_encrypted_at_rest(algorithm):
    row = rotate_signing_keys(algorithm)
    stored = SigningKey.objects.values_list("private_key", flat=True).get(pk=row.pk)
    private = keys.load_private_key(row)
    pem = private.export_to_pem(private_key=True, password=None).decode()
    assert "PRIVATE KEY" not in stored
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    assert body[:40] not in stored
    assert private.export(as_dict=True)["d"] not in stored
    # Fernet token: url-safe base64 starting with version byte 0x80.
    assert base64.urlsafe_b64decode(stored)[0] == 0x80


@pytest.mark.django_db
@pytest.mark.spec("RFC 7515 §5")
@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "ES384"])
def test_private_key_round_trips_and_signs(algorithm):
    row = rotate_signing_keys(algorithm)
    row = SigningKey.objects.get(pk=row.pk)
    private = keys.load_private_key(row)
    assert private.has_private
    assert private["kid"] == row.kid
    assert private["alg"] == algorithm

    token = jws.JWS(b'{"sub":"Patient/1"}')
    token.add_signature(private, alg=algorithm, protected=json.dumps({"alg": algorithm, "kid": row.kid}))
    compact = token.serialize(compact=True)

    published = {k["kid"]: k for k in keys.jwks()["keys"]}[row.kid]
    verifier = jws.JWS()
    verifier.deserialize(compact)
    verifier.verify(jwk.JWK(**published))
    assert verifier.payload == b'{"sub":"Patient/1"}'

    stranger = jwk.JWK(**keys.public_jwk(keys.generate_key(algorithm)[0]))
    other = jws.JWS()
    other.deserialize(compact)
    with pytest.raises(jws.InvalidJWSSignature):
        other.verify(stranger)


def _row(encrypted: str, key: jwk.JWK, algorithm: str) -> SigningKey:
    return SigningKey(kid=key.thumbprint(), algorithm=algorithm, private_key=encrypted, public_jwk=keys.public_jwk(key))


def test_decrypt_with_old_secret_key_in_fallbacks():
    with override_settings(MEDPLUM_AUTH={}, SECRET_KEY=OLD_KEY, SECRET_KEY_FALLBACKS=[]):
        key, encrypted = keys.generate_key("ES256")
    with override_settings(MEDPLUM_AUTH={}, SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY]):
        loaded = keys.load_private_key(_row(encrypted, key, "ES256"))
    assert loaded.thumbprint() == key.thumbprint()
    assert loaded.export(as_dict=True)["d"] == key.export(as_dict=True)["d"]


def test_decrypt_with_wrong_secret_key_is_improperly_configured():
    with override_settings(MEDPLUM_AUTH={}, SECRET_KEY=OLD_KEY, SECRET_KEY_FALLBACKS=[]):
        key, encrypted = keys.generate_key("ES256")
    with (override_settings(MEDPLUM_AUTH={}, SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[]),
          pytest.raises(ImproperlyConfigured) as exc):
        keys.load_private_key(_row(encrypted, key, "ES256"))
    assert f"Signing key {key.thumbprint()} cannot be decrypted" in str(exc.value)
    assert "SECRET_KEY_FALLBACKS" in str(exc.value)


def test_key_encryption_secret_replaces_secret_key():
    secret = "key-encryption-secret-" + "e" * 40
    with override_settings(MEDPLUM_AUTH={"KEY_ENCRYPTION_SECRET": secret}, SECRET_KEY=OLD_KEY):
        key, encrypted = keys.generate_key("ES256")
    with (override_settings(MEDPLUM_AUTH={}, SECRET_KEY=OLD_KEY, SECRET_KEY_FALLBACKS=[]),
          pytest.raises(ImproperlyConfigured)):
        keys.load_private_key(_row(encrypted, key, "ES256"))
    with override_settings(MEDPLUM_AUTH={"KEY_ENCRYPTION_SECRET": secret}, SECRET_KEY=NEW_KEY):
        assert keys.load_private_key(_row(encrypted, key, "ES256")).thumbprint() == key.thumbprint()


@pytest.mark.django_db
@pytest.mark.spec("RFC 7517 §5")
def test_jwks_publishes_public_members_only():
    rotate_signing_keys("RS256")
    rotate_signing_keys("ES256")
    published = keys.jwks()
    assert set(published) == {"keys"}
    assert len(published["keys"]) >= 2
    for key in published["keys"]:
        assert not PRIVATE_MEMBERS & set(key), key
        assert {"kty", "kid", "alg", "use"} <= set(key)
    rsa = [k for k in published["keys"] if k["kty"] == "RSA"]
    assert rsa and all({"n", "e"} <= set(k) for k in rsa)


@pytest.mark.django_db
def test_jwks_lists_active_and_inactive_but_not_retired_keys():
    SigningKey.objects.all().delete()
    assert keys.jwks() == {"keys": []}
    first = rotate_signing_keys("ES256")
    second = rotate_signing_keys("ES256")
    assert [k["kid"] for k in keys.jwks()["keys"]] == [second.kid, first.kid]
    SigningKey.objects.filter(pk=first.pk).update(status=SigningKey.Status.RETIRED)
    assert [k["kid"] for k in keys.jwks()["keys"]] == [second.kid]


@pytest.mark.django_db
def test_get_active_key():
    SigningKey.objects.all().delete()
    assert keys.get_active_key() is None
    first = rotate_signing_keys("ES256")
    assert keys.get_active_key() == first
    second = rotate_signing_keys("ES256")
    assert keys.get_active_key() == second
