"""Known answers for every stored or signed format a deployment depends on.

Stored client-secret digests, code and refresh-token digests, encrypted signing keys and TOTP
secrets, recovery-code digests, reset links, key ids and the JWS headers and claims of access
and ID tokens outlive any one release: rows written by the last release must still work after
an upgrade. Each expected value here is a literal (computed once with ``hashlib``/``hmac``,
``cryptography`` and ``jwcrypto`` directly, never with the code under test) or is computed in
the test the same independent way, so a change of format (a salt, a key derivation, a claim)
fails loudly and needs a migration story instead of locking every deployment out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import types
import uuid
from datetime import timedelta

import pyotp
import pytest
from cryptography.fernet import Fernet
from django.utils import timezone
from django.utils.http import urlsafe_base64_encode
from jwcrypto import jwk, jws

from medplum_auth import keys, mfa, passwords, tokens
from medplum_auth.logins import code_digest
from medplum_auth.models import Login, RecoveryCode, SigningKey, TotpDevice
from medplum_auth.oauth2_validators import token_digest
from medplum_auth.secrets import digest_client_secret, verify_client_secret
from medplum_auth.services import ensure_signing_key
from tests.factories import ClientApplicationFactory, UserFactory
from tests.oauth.conftest import Flow, basic_auth, post_form

SECRET_KEY = "known-answer-secret-key"
OLD_SECRET_KEY = "known-answer-old-secret-key"
ISSUER = "https://known-answer.example"

CLIENT_SECRET = "0123456789abcdef" * 4
# hmac-sha256$ + HMAC-SHA256(key=SHA-256(b"medplum_auth.client-secret" + key), CLIENT_SECRET)
CLIENT_SECRET_DIGEST = "hmac-sha256$1e7195adffe4d2a33c0c85a45023236f764d98d93977f90f4496a14d01fd1de5"
CLIENT_SECRET_DIGEST_OLD_KEY = "hmac-sha256$f30ea820f1740cdeb2aa4caefdfb7378881de487f260e0c602dc728d46e7bc99"
CLIENT_SECRET_DIGEST_CONFIGURED = "hmac-sha256$e9d8574ed2a8f34666141af92fba8f08dcc771cfb4cfaa51245ef423abf366e9"

REFRESH_TOKEN = "known-answer-refresh-token-0123456789abcdefg"
REFRESH_TOKEN_DIGEST = "ea097f64a3edc66b10fc5df43cfc170fce0601966f2140f41cf25313c5849cba"  # SHA-256 hex

RECOVERY_CODE = "abcde-fghij"
RECOVERY_CODE_DIGEST = "741f4888fea1b7bb34e148c8ed6a7f8203f5885c65ddce0243e68bf786210ba4"  # SHA-256 hex

TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
# Fernet(urlsafe_b64(SHA-256(b"medplum_auth.totp-secret" + SECRET_KEY))).encrypt(TOTP_SECRET)
TOTP_SECRET_ENCRYPTED = ("gAAAAABrFfEGn6wXOFf0ravhkFsty9_vmFABRtJQP109Ex_dHrm7LPCujmqCcctt9GJPD1TlhnAMXtGjJyNlP4d"
                         "eBBe_ngHAu60srGcOZXSHEtIhu5M3qDuCKH3puA4TyDdkgi2-kHo-")

# A P-256 signing key as stored: the PKCS#8 PEM encrypted with
# Fernet(urlsafe_b64(SHA-256(b"medplum_auth.signing-key" + SECRET_KEY))).
SIGNING_KEY_ENCRYPTED = (
    "gAAAAABrFfBBTwul6IoPPIaLQCqSyX-XOlgBmY6yF4nrV9cbfWU6ya1RHkqYdE16j5bIez9q5M-sRbMA6kkh6rgTfBJhl5YN9WWa_IgBhjrO"
    "h8cFLJb4qIYMMQU5sNxmGVVntamRU77_gWKWfX1YaBLSXOf9t5NDv3a1fsa7n4gHpgjbGdKckdEB9QbG3OspZX1YsPf1lhll0HTXvBf2226v"
    "C_y96eXQOjJMeyXJmIQtqWYx5pVc1U_oOxt4LwYEeQfWVlk_XKg6ZMZCaG68vXQ2eLuxAvKpNANeL-MLapVGNXaX4lauArdEFvOzwYKvK_UG"
    "s1b3J10IHxuwTDgzOBkQucatxCFXduDArGPgEstUDkWJbQk02Bd9mjK0GR7Ym2chFdGDC2izeqBjNuZyVOg7x7T-5BBqEg==")
SIGNING_KEY_X = "oeh3iDIA_CyrVsHZa8Uo0pV7Kc0n3fOtfiM6-4j1FzE"
SIGNING_KEY_Y = "leCVX3x9R1pplc59lknJLDoUNUN_aDc50G9sWH5e1wo"
# RFC 7638 thumbprint: base64url(SHA-256('{"crv":"P-256","kty":"EC","x":…,"y":…}'))
KID = "Uih7oOtAaT1Akn1hIQL8MB_vzwCylG8tIc4qt0C4XKc"
PUBLIC_JWK = {"kty": "EC", "crv": "P-256", "x": SIGNING_KEY_X, "y": SIGNING_KEY_Y, "kid": KID, "alg": "ES256",
              "use": "sig"}

# An access token signed once with that key by jwcrypto (a release's tokens in flight at an upgrade).
ACCESS_TOKEN = (
    "eyJhbGciOiAiRVMyNTYiLCAia2lkIjogIlVpaDdvT3RBYVQxQWtuMWhJUUw4TUJfdnp3Q3lsRzh0SWM0cXQwQzRYS2MiLCAidHlwIjogImF0K2p3"
    "dCJ9.eyJpc3MiOiJodHRwczovL2tub3duLWFuc3dlci5leGFtcGxlIiwic3ViIjoiNDIiLCJhdWQiOiJodHRwczovL2tub3duLWFuc3dlci5leGF"
    "tcGxlIiwiaWF0IjoxNzAwMDAwMDAwLCJuYmYiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMCwianRpIjoiMDAwMDAwMDAtMDAwMC00MDAwLTg"
    "wMDAtMDAwMDAwMDAwMDAxIiwiY2xpZW50X2lkIjoia2EtY2xpZW50IiwibG9naW5faWQiOiIxMTExMTExMS0yMjIyLTQzMzMtODQ0NC01NTU1NTU"
    "1NTU1NTUiLCJzY29wZSI6Im9wZW5pZCBwYXRpZW50LyoucnMiLCJ1c2VybmFtZSI6IjQyIiwicHJvZmlsZSI6IlBhdGllbnQvcC0xIn0.nC_xZT6r"
    "xeyEm41BbCVtoLAbmZgY02uoL2WQvqbDrNtF-yTUBsGuxRFunWq55MIgS10f8UZJFVylSS5eG3g36w")
ACCESS_TOKEN_CLAIMS = {
    "iss": ISSUER, "sub": "42", "aud": ISSUER, "iat": 1700000000, "nbf": 1700000000, "exp": 1700003600,
    "jti": "00000000-0000-4000-8000-000000000001", "client_id": "ka-client",
    "login_id": "11111111-2222-4333-8444-555555555555", "scope": "openid patient/*.rs", "username": "42",
    "profile": "Patient/p-1",
}

TOKEN_43 = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32): 256 bits, base64url
BROWSER_CODE = re.compile(r"[A-Za-z0-9]{30}")  # oauthlib's generate_token(): 30 of 62 characters, 178 bits


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(compact: str, index: int) -> dict:
    part = compact.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def jwcrypto_verify(compact: str, public: dict) -> dict:
    """The claims, after jwcrypto (not our verifier) checked the signature against ``public``."""
    parsed = jws.JWS()
    parsed.deserialize(compact)
    parsed.verify(jwk.JWK(**public), alg=public["alg"])
    return json.loads(parsed.payload)


@pytest.fixture(autouse=True)
def known_keys(settings):
    """Every key this module's literals were made under, and nothing configured over them."""
    settings.SECRET_KEY = SECRET_KEY
    settings.SECRET_KEY_FALLBACKS = []
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "ISSUER": ISSUER, "KEY_ENCRYPTION_SECRET": None,
                             "CLIENT_SECRET_DIGEST_KEY": None}


@pytest.fixture
def signing_key(db):
    """The literal key, stored as a release stored it (the only one: tests/oauth makes its own)."""
    SigningKey.objects.all().delete()
    row = SigningKey.objects.create(kid=KID, algorithm="ES256", status=SigningKey.Status.ACTIVE,
                                    private_key=SIGNING_KEY_ENCRYPTED, public_jwk=PUBLIC_JWK)
    tokens.clear_cache()
    return row


# --- client secrets --------------------------------------------------------------------------


def test_client_secret_digest_is_hmac_sha256_under_the_derived_secret_key():
    assert digest_client_secret(CLIENT_SECRET) == CLIENT_SECRET_DIGEST
    assert verify_client_secret(CLIENT_SECRET, CLIENT_SECRET_DIGEST) is True
    assert verify_client_secret(CLIENT_SECRET[:-1] + "0", CLIENT_SECRET_DIGEST) is False


def test_client_secret_digest_under_a_fallback_key_still_verifies(settings):
    settings.SECRET_KEY_FALLBACKS = [OLD_SECRET_KEY]
    assert digest_client_secret(CLIENT_SECRET) == CLIENT_SECRET_DIGEST  # new digests: the current key
    assert verify_client_secret(CLIENT_SECRET, CLIENT_SECRET_DIGEST_OLD_KEY) is True
    settings.SECRET_KEY_FALLBACKS = []
    assert verify_client_secret(CLIENT_SECRET, CLIENT_SECRET_DIGEST_OLD_KEY) is False


def test_client_secret_digest_under_the_configured_digest_key(settings):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "CLIENT_SECRET_DIGEST_KEY": "configured-digest-key"}
    assert digest_client_secret(CLIENT_SECRET) == CLIENT_SECRET_DIGEST_CONFIGURED
    settings.SECRET_KEY = OLD_SECRET_KEY  # SECRET_KEY no longer matters
    assert verify_client_secret(CLIENT_SECRET, CLIENT_SECRET_DIGEST_CONFIGURED) is True
    assert verify_client_secret(CLIENT_SECRET, CLIENT_SECRET_DIGEST) is False


@pytest.mark.spec("RFC 6749 §2.3.1")
def test_a_stored_client_digest_authenticates_at_the_token_endpoint(client, oauth_project, signing_key):
    app = ClientApplicationFactory(project=oauth_project, client_id="ka-confidential",
                                   plaintext_secret=CLIENT_SECRET, client_secret=CLIENT_SECRET_DIGEST)
    response = post_form(client, "/oauth2/token", {"grant_type": "client_credentials", "scope": "openid system/*.rs"},
                         HTTP_AUTHORIZATION=basic_auth("ka-confidential", CLIENT_SECRET))
    assert response.status_code == 200, response.content
    claims = jwcrypto_verify(response.json()["access_token"], PUBLIC_JWK)
    assert (claims["client_id"], claims["sub"]) == (app.client_id, app.client_id)


# --- codes and refresh tokens ----------------------------------------------------------------


def test_code_and_refresh_token_digests_are_unkeyed_sha256_hex():
    assert token_digest(REFRESH_TOKEN) == REFRESH_TOKEN_DIGEST
    assert code_digest(REFRESH_TOKEN) == REFRESH_TOKEN_DIGEST


def full_flow(client, app):
    flow = Flow(client, app)
    code = flow.code(scope="openid profile email fhirUser offline_access")
    login = Login.objects.get(client=app)
    response = flow.token(code)
    assert response.status_code == 200, response.content
    return code, login, response.json()


@pytest.mark.spec("RFC 6749 §10.10")
def test_codes_and_refresh_tokens_are_256_bit_base64url_stored_as_sha256(client, public_client, patient,
                                                                         signing_key):
    code, login, body = full_flow(client, public_client)
    assert BROWSER_CODE.fullmatch(code), code
    assert login.code_digest == hashlib.sha256(code.encode()).hexdigest()
    refresh = body["refresh_token"]
    assert TOKEN_43.fullmatch(refresh), refresh
    login.refresh_from_db()
    assert login.refresh_digest == hashlib.sha256(refresh.encode()).hexdigest()
    assert code not in json.dumps(list(Login.objects.values()), default=str)
    assert refresh not in json.dumps(list(Login.objects.values()), default=str)


@pytest.mark.spec("RFC 6749 §6")
def test_a_stored_refresh_token_digest_still_refreshes(client, public_client, patient, signing_key):
    now = timezone.now()
    login = Login.objects.create(
        user=patient.user, client=public_client, project=public_client.project, membership=patient,
        auth_time=now, granted_at=now, scope="openid offline_access", refresh_digest=REFRESH_TOKEN_DIGEST,
        refresh_expires_at=now + timedelta(days=1), amr="pwd")
    response = post_form(client, "/oauth2/token", {"grant_type": "refresh_token", "refresh_token": REFRESH_TOKEN,
                                                   "client_id": public_client.client_id})
    assert response.status_code == 200, response.content
    login.refresh_from_db()
    assert login.previous_refresh_digest == REFRESH_TOKEN_DIGEST
    assert login.refresh_digest == hashlib.sha256(response.json()["refresh_token"].encode()).hexdigest()
    assert jwcrypto_verify(response.json()["access_token"], PUBLIC_JWK)["login_id"] == str(login.pk)


# --- signing keys, key ids, JWS ---------------------------------------------------------------


def test_a_stored_signing_key_decrypts_and_is_published_as_stored(client, signing_key):
    public = keys.load_private_key(signing_key).get_op_key("verify").public_numbers()
    assert b64url(public.x.to_bytes(32, "big")) == SIGNING_KEY_X
    assert b64url(public.y.to_bytes(32, "big")) == SIGNING_KEY_Y
    response = client.get("/.well-known/jwks.json")
    assert response.json() == {"keys": [PUBLIC_JWK]}


def test_a_token_signed_by_a_stored_key_still_verifies(signing_key):
    assert tokens.decode(ACCESS_TOKEN, tokens.ACCESS_TOKEN_TYPE, verify_exp=False) == ACCESS_TOKEN_CLAIMS


@pytest.mark.spec("RFC 7638 §3")
@pytest.mark.parametrize("algorithm, members", [("RS256", ("e", "kty", "n")), ("ES256", ("crv", "kty", "x", "y"))])
def test_key_ids_are_rfc7638_thumbprints(settings, algorithm, members, db):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "SIGNING_ALGORITHM": algorithm}
    SigningKey.objects.all().delete()
    row = ensure_signing_key()
    canonical = json.dumps({m: row.public_jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    assert row.kid == b64url(hashlib.sha256(canonical.encode()).digest())
    assert row.public_jwk["kid"] == row.kid
    assert (row.public_jwk["alg"], row.public_jwk["use"]) == (algorithm, "sig")


@pytest.mark.spec("RFC 9068 §2.1, §2.2")
def test_access_token_header_and_claims(monkeypatch, signing_key):
    monkeypatch.setattr(tokens, "time", types.SimpleNamespace(time=lambda: 1700000000.5,
                                                                monotonic=time.monotonic))
    monkeypatch.setattr(tokens, "uuid", types.SimpleNamespace(uuid4=lambda: uuid.UUID(ACCESS_TOKEN_CLAIMS["jti"])))
    compact = tokens.issue_access_token(subject="42", client_id="ka-client",
                                        login_id="11111111-2222-4333-8444-555555555555",
                                        scope="openid patient/*.rs", profile="Patient/p-1", lifetime=3600)
    assert segment(compact, 0) == {"alg": "ES256", "kid": KID, "typ": "at+jwt"}
    assert jwcrypto_verify(compact, PUBLIC_JWK) == ACCESS_TOKEN_CLAIMS


@pytest.mark.spec("OIDC Core §2, §3.1.3.6; RFC 9068 §2.2")
def test_tokens_of_a_code_flow_header_and_claims(client, public_client, patient, signing_key):
    _, login, body = full_flow(client, public_client)
    login.refresh_from_db()
    user, fhir = patient.user, f"{ISSUER}/fhir/R4/{patient.profile}"
    access, id_token = body["access_token"], body["id_token"]

    assert segment(access, 0) == {"alg": "ES256", "kid": KID, "typ": "at+jwt"}
    claims = jwcrypto_verify(access, PUBLIC_JWK)
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]
    assert str(uuid.UUID(claims["jti"], version=4)) == claims["jti"]
    assert {k: v for k, v in claims.items() if k not in {"iat", "nbf", "exp", "jti"}} == {
        "iss": ISSUER, "sub": str(user.pk), "aud": ISSUER, "client_id": public_client.client_id,
        "login_id": str(login.pk), "scope": "openid profile email fhirUser offline_access",
        "username": str(user.pk), "profile": patient.profile,
    }

    assert segment(id_token, 0) == {"alg": "ES256", "kid": KID, "typ": "JWT"}
    claims = jwcrypto_verify(id_token, PUBLIC_JWK)
    assert claims["exp"] - claims["iat"] == 3600
    assert {k: v for k, v in claims.items() if k not in {"iat", "exp"}} == {
        "iss": ISSUER, "sub": str(user.pk), "aud": public_client.client_id, "nonce": "n-0S6_WzA2Mj",
        # OIDC Core §3.1.3.6: the left half of SHA-256 of the access token, base64url
        "at_hash": b64url(hashlib.sha256(access.encode()).digest()[:16]),
        "auth_time": int(login.auth_time.timestamp()), "login_id": str(login.pk), "amr": ["pwd"], "acr": "pwd",
        "fhirUser": fhir, "profile": patient.profile, "name": user.get_full_name(), "given_name": user.first_name,
        "family_name": user.last_name, "preferred_username": user.username, "email": user.email,
        "email_verified": False,
    }
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600


# --- second factors -----------------------------------------------------------------------------


def test_recovery_codes_are_stored_as_sha256_of_the_normalised_code(db):
    user = UserFactory()
    RecoveryCode.objects.create(user=user, digest=RECOVERY_CODE_DIGEST)
    assert mfa.use_recovery_code(user, " ABCDE-FGHIJ ") is True  # case and spaces do not matter
    assert mfa.use_recovery_code(user, RECOVERY_CODE) is False  # single use
    fresh = mfa.new_recovery_codes(user)
    assert set(RecoveryCode.objects.filter(user=user).values_list("digest", flat=True)) == {
        hashlib.sha256(code.encode()).hexdigest() for code in fresh}


def fernet(purpose: bytes) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(purpose + SECRET_KEY.encode()).digest()))


@pytest.mark.spec("RFC 6238 §4")
def test_a_stored_totp_secret_still_verifies(db):
    user = UserFactory()
    TotpDevice.objects.create(user=user, secret=TOTP_SECRET_ENCRYPTED, confirmed_at=timezone.now())
    assert mfa.verify_totp(user, pyotp.TOTP(TOTP_SECRET).now()) is True


def test_new_totp_secrets_are_fernet_under_their_own_derived_key(db):
    user = UserFactory()
    enrollment = mfa.start_totp(user)
    stored = TotpDevice.objects.get(user=user).secret
    assert fernet(b"medplum_auth.totp-secret").decrypt(stored.encode()).decode() == enrollment.secret
    assert re.fullmatch(r"[A-Z2-7]{32}", enrollment.secret)  # base32, 160 bits (RFC 4226 §4)


# --- password reset links -----------------------------------------------------------------------


def reset_token(user, timestamp: int) -> str:
    """Django's token, written out: base36 time + every other hex digit of an HMAC-SHA256 under
    SHA-256(key salt + SECRET_KEY) of pk, password hash, last sign-in, time and email."""
    last_login = "" if user.last_login is None else user.last_login.replace(microsecond=0, tzinfo=None)
    value = f"{user.pk}{user.password}{last_login}{timestamp}{user.email}"
    key = hashlib.sha256(("medplum_auth.passwords.ResetTokenGenerator" + SECRET_KEY).encode()).digest()
    digits, number = "0123456789abcdefghijklmnopqrstuvwxyz", timestamp
    base36 = ""
    while number:
        number, rest = divmod(number, 36)
        base36 = digits[rest] + base36
    return f"{base36}-{hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[::2]}"


def test_reset_links_carry_a_salted_django_token(db):
    user = UserFactory(email="reset@example.org")
    url = passwords.reset_url(user)
    prefix = f"{ISSUER}/oauth2/setpassword/{urlsafe_base64_encode(str(user.pk).encode())}/"
    assert url.startswith(prefix)
    token = url.removeprefix(prefix)
    assert token == reset_token(user, int(token.split("-")[0], 36))
    link_id = url.split("/")[-2]
    assert passwords.check_link(link_id, token) == user
    other_salt = token.split("-")[0] + "-" + "0" * 32
    assert passwords.check_link(link_id, other_salt) is None
