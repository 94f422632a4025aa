"""The compact JWS that ``medplum_auth.tokens`` signs and verifies with ``cryptography``.

Interoperability is checked against jwcrypto (an independent implementation): our tokens verify
there, and its tokens verify here. Everything else must be refused as ``InvalidToken``.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from jwcrypto import jwk, jws

from medplum_auth import jws as our_jws
from medplum_auth import keys, tokens
from medplum_auth.conf import auth_settings
from medplum_auth.services import rotate_signing_keys

pytestmark = pytest.mark.django_db

ALGORITHMS = ["RS256", "ES256", "ES384"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**extra):
    now = int(time.time())
    return {"iss": auth_settings.ISSUER, "sub": "Patient/1", "exp": now + 60, "iat": now, **extra}


def jwcrypto_token(row, payload, header=None) -> str:
    token = jws.JWS(json.dumps(payload).encode())
    token.add_signature(keys.load_private_key(row), alg=row.algorithm,
                        protected=json.dumps(header or {"alg": row.algorithm, "kid": row.kid, "typ": "JWT"}))
    return token.serialize(compact=True)


@pytest.mark.spec("RFC 7515 §7.1")
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_our_tokens_verify_with_jwcrypto(algorithm):
    row = rotate_signing_keys(algorithm)
    compact = tokens.sign(claims(nonce="n-1"))
    header = json.loads(base64.urlsafe_b64decode(compact.split(".")[0] + "=="))
    assert header == {"alg": algorithm, "kid": row.kid, "typ": "JWT"}
    parsed = jws.JWS()
    parsed.deserialize(compact)
    published = {k["kid"]: k for k in keys.jwks()["keys"]}[row.kid]
    parsed.verify(jwk.JWK(**published), alg=algorithm)
    assert json.loads(parsed.payload)["nonce"] == "n-1"
    assert tokens.decode(compact, "JWT")["nonce"] == "n-1"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_jwcrypto_tokens_verify_here(algorithm):
    row = rotate_signing_keys(algorithm)
    assert tokens.decode(jwcrypto_token(row, claims(sub="Practitioner/7")), "JWT")["sub"] == "Practitioner/7"


@pytest.mark.parametrize("algorithm", ["ES256", "ES384"])
def test_ecdsa_signatures_are_fixed_width_r_s(algorithm):
    rotate_signing_keys(algorithm)
    size = {"ES256": 64, "ES384": 96}[algorithm]
    for _ in range(20):  # DER lengths vary with leading zeros; R || S never does
        signature = tokens.sign(claims()).split(".")[2]
        assert len(base64.urlsafe_b64decode(signature + "==")) == size


def raw_token(header, payload) -> str:
    """Signed correctly with the active key, whatever the header says (jwcrypto refuses some)."""
    row, key = tokens._active_signer()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}".encode()
    return f"{signing_input.decode()}.{b64(our_jws.sign(key, row.algorithm, signing_input))}"


def _tampered(compact: str, index: int, segment: str) -> str:
    parts = compact.split(".")
    parts[index] = segment
    return ".".join(parts)


@pytest.mark.spec("RFC 8725 §3.1")
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_forgeries_are_refused(algorithm):
    row = rotate_signing_keys(algorithm)
    good = tokens.sign(claims())
    header, payload, signature = good.split(".")
    raw = base64.urlsafe_b64decode(signature + "==")
    flipped = b64(raw[:-1] + bytes([raw[-1] ^ 1]))
    forgeries = {
        "payload changed": _tampered(good, 1, b64(json.dumps(claims(sub="Patient/2")).encode())),
        "signature bit flipped": _tampered(good, 2, flipped),
        "signature truncated": _tampered(good, 2, b64(raw[:-2])),
        "signature padded": _tampered(good, 2, signature + "="),
        "signature with a character outside base64url": _tampered(good, 2, signature[:-1] + "+"),
        "signature empty": _tampered(good, 2, ""),
        "alg none": ".".join([b64(json.dumps({"alg": "none", "kid": row.kid, "typ": "JWT"}).encode()), payload, ""]),
        "alg of another family": _tampered(good, 0, b64(json.dumps(
            {"alg": "HS256" if algorithm != "HS256" else "RS256", "kid": row.kid, "typ": "JWT"}).encode())),
        "unknown kid": _tampered(good, 0, b64(json.dumps({"alg": algorithm, "kid": "nope", "typ": "JWT"}).encode())),
        "crit header": raw_token({"alg": algorithm, "kid": row.kid, "typ": "JWT", "crit": ["exp"], "exp": 1},
                                 claims()),
        "header not JSON": _tampered(good, 0, b64(b"{not json")),
        "header a list": _tampered(good, 0, b64(b"[]")),
        "non-ASCII": good[:-1] + "\u00e9",
        "two segments": f"{header}.{payload}",
        "four segments": f"{good}.x",
    }
    assert tokens.decode(raw_token({"alg": algorithm, "kid": row.kid, "typ": "JWT"}, claims()), "JWT")
    for name, forged in forgeries.items():
        with pytest.raises(tokens.InvalidToken):
            tokens.decode(forged, "JWT")
        assert name  # the dict key names the case in a failure's traceback
    assert tokens.decode(good, "JWT")["sub"] == "Patient/1"


def test_token_type_is_checked_both_ways():
    rotate_signing_keys("RS256")
    id_token = tokens.sign(claims())
    with pytest.raises(tokens.InvalidToken, match="wrong token type"):
        tokens.verify_access_token(id_token)
    access = tokens.issue_access_token(subject="u", client_id="c", login_id="l", scope="openid", profile=None,
                                       lifetime=60)
    with pytest.raises(tokens.InvalidToken, match="wrong token type"):
        tokens.decode(access, "JWT")
    assert tokens.verify_access_token(access)["login_id"] == "l"


def test_payload_must_be_a_json_object_from_our_issuer():
    row = rotate_signing_keys("ES256")
    with pytest.raises(tokens.InvalidToken, match="wrong issuer"):
        tokens.decode(jwcrypto_token(row, claims(iss="https://elsewhere.example")), "JWT")
    with pytest.raises(tokens.InvalidToken, match="bad claims"):
        tokens.decode(jwcrypto_token(row, ["not", "an", "object"]), "JWT")
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.decode(jwcrypto_token(row, claims(exp=int(time.time()) - tokens.CLOCK_SKEW - 5)), "JWT")


def access_token(lifetime: int = 60) -> str:
    return tokens.issue_access_token(subject="u", client_id="c", login_id="l", scope="openid", profile=None,
                                     lifetime=lifetime)


def test_a_verified_token_is_remembered_and_its_claims_rechecked_on_every_use(monkeypatch, settings):
    """The signature of a token is checked once per cached key; type, issuer and lifetime every time."""
    rotate_signing_keys("RS256")
    token = access_token()
    assert tokens.verify_access_token(token)["login_id"] == "l"
    checks = []
    real_verify = our_jws.verify
    monkeypatch.setattr(our_jws, "verify", lambda *args: checks.append(args) or real_verify(*args))
    claims_seen = tokens.verify_access_token(token)
    assert claims_seen["login_id"] == "l" and checks == []  # remembered: no second signature check
    claims_seen["login_id"] = "someone-else"  # a caller's copy: the remembered claims are untouched
    assert tokens.verify_access_token(token)["login_id"] == "l"
    with pytest.raises(tokens.InvalidToken, match="wrong token type"):
        tokens.decode(token, tokens.ID_TOKEN_TYPE)  # remembered as an access token only
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(tokens.InvalidToken, match="bad signature"):
        tokens.verify_access_token(tampered)
    later = time.time() + 61 + tokens.CLOCK_SKEW
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.verify_access_token(token)
    monkeypatch.undo()
    settings.MEDPLUM_AUTH = {**getattr(settings, "MEDPLUM_AUTH", {}), "ISSUER": "https://moved.example"}
    with pytest.raises(tokens.InvalidToken, match="wrong issuer"):
        tokens.verify_access_token(token)


def test_remembered_tokens_are_checked_again_when_their_key_is(monkeypatch):
    row = rotate_signing_keys("ES256")
    token = access_token()
    tokens.verify_access_token(token)
    checks = []
    real_verify = our_jws.verify
    monkeypatch.setattr(our_jws, "verify", lambda *args: checks.append(args) or real_verify(*args))
    later = time.monotonic() + tokens.CACHE_SECONDS + 1
    monkeypatch.setattr(tokens.time, "monotonic", lambda: later)
    assert tokens.verify_access_token(token)["login_id"] == "l"
    assert len(checks) == 1  # the key was looked up again, and the signature checked with it
    row.status = row.Status.RETIRED
    row.save()  # clears every cache of the process: a retired key's tokens stop at once
    with pytest.raises(tokens.InvalidToken, match="unknown key"):
        tokens.verify_access_token(token)
