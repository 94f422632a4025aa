"""Client authentication at ``/oauth2/token`` (client_secret_basic, client_secret_post,
private_key_jwt with inline JWKS and ``jwks_uri``) and the client_credentials grant."""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from jwcrypto import jwk, jwt

from medplum_auth import services
from medplum_auth.assertions import ASSERTION_TYPE
from medplum_auth.conf import auth_settings
from medplum_auth.models import Login, SecurityEvent
from tests.factories import ClientApplicationFactory
from tests.oauth.conftest import (
    REDIRECT_URI,
    Flow,
    assert_no_store,
    assert_oauth_error,
    basic_auth,
    login_of,
    obtain_code,
    post_form,
    userinfo_status,
    verify_jwt,
)

TOKEN = "/oauth2/token"
KEY_SPECS = {
    "RS256": {"kty": "RSA", "size": 2048},
    "RS384": {"kty": "RSA", "size": 2048},
    "ES256": {"kty": "EC", "crv": "P-256"},
    "ES384": {"kty": "EC", "crv": "P-384"},
}


def token_url() -> str:
    return f"{auth_settings.ISSUER}/oauth2/token"


def client_credentials(http: Any, data: dict[str, Any] | None = None, **extra: Any):
    return post_form(http, TOKEN, {"grant_type": "client_credentials", **(data or {})}, **extra)


def assert_invalid_client(response) -> None:
    assert_oauth_error(response, "invalid_client", status=401)
    assert response["WWW-Authenticate"].startswith("Basic "), response.get("WWW-Authenticate")
    assert_no_store(response)


# --- client_secret_basic / client_secret_post -----------------------------------------------

@pytest.mark.spec("RFC 6749 §2.3.1")
@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC"])
def test_client_secret_basic(client, confidential_client, scheme):
    auth = basic_auth(confidential_client.client_id, confidential_client.plaintext_secret, scheme=scheme)
    response = client_credentials(client, HTTP_AUTHORIZATION=auth)
    assert response.status_code == 200, response.content
    assert_no_store(response)


@pytest.mark.spec("RFC 6749 §2.3.1")
def test_client_secret_basic_credentials_are_form_url_decoded(client, oauth_project):
    """RFC 6749 §2.3.1: client id and secret are application/x-www-form-urlencoded before base64."""
    app = ClientApplicationFactory(project=oauth_project, client_id="legacy client:1/ü",
                                   plaintext_secret="s3cret:with/special+chars&=% é")
    response = client_credentials(client, HTTP_AUTHORIZATION=basic_auth(app.client_id, app.plaintext_secret))
    assert response.status_code == 200, response.content
    assert verify_jwt(client, response.json()["access_token"])[1]["client_id"] == "legacy client:1/ü"
    raw = base64.b64encode(f"{app.client_id}:{app.plaintext_secret}".encode()).decode()
    assert_invalid_client(client_credentials(client, HTTP_AUTHORIZATION=f"Basic {raw}"))  # unencoded ':' splits early


@pytest.mark.spec("RFC 6749 §2.3.1")
def test_client_secret_post(client, confidential_client):
    response = client_credentials(client, {"client_id": confidential_client.client_id,
                                           "client_secret": confidential_client.plaintext_secret})
    assert response.status_code == 200, response.content


@pytest.mark.spec("RFC 6749 §5.2")
@pytest.mark.parametrize("method", ["basic", "post"])
@pytest.mark.parametrize("secret", ["0" * 64, "", "x"])
def test_wrong_secret(client, confidential_client, method, secret):
    if method == "basic":
        response = client_credentials(client, HTTP_AUTHORIZATION=basic_auth(confidential_client.client_id, secret))
    else:
        response = client_credentials(client, {"client_id": confidential_client.client_id, "client_secret": secret})
    assert_invalid_client(response)
    if method == "basic":
        assert response["WWW-Authenticate"] == 'Basic realm="oauth2", error="invalid_client"'
    assert not Login.objects.exists()


@pytest.mark.spec("RFC 6749 §5.2")
@pytest.mark.parametrize("header", ["Basic", "Basic !!!notbase64", "Basic " + base64.b64encode(b"nocolon").decode(),
                                    "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode()])
def test_malformed_basic_header(client, confidential_client, header):
    assert_invalid_client(client_credentials(client, {"client_id": confidential_client.client_id},
                                             HTTP_AUTHORIZATION=header))


def test_secret_of_another_client(client, oauth_project, confidential_client):
    other = ClientApplicationFactory(project=oauth_project)
    assert_invalid_client(client_credentials(
        client, HTTP_AUTHORIZATION=basic_auth(confidential_client.client_id, other.plaintext_secret)))


def test_secret_rotation_keeps_the_retiring_secret_until_retired(client, confidential_client):
    old = confidential_client.plaintext_secret
    new = services.rotate_client_secret(confidential_client)
    assert new != old
    for secret in (old, new):
        auth = basic_auth(confidential_client.client_id, secret)
        assert client_credentials(client, HTTP_AUTHORIZATION=auth).status_code == 200

    services.retire_client_secret(confidential_client)
    assert_invalid_client(client_credentials(client, HTTP_AUTHORIZATION=basic_auth(confidential_client.client_id,
                                                                                   old)))
    assert_invalid_client(client_credentials(client, {"client_id": confidential_client.client_id,
                                                      "client_secret": old}))
    auth = basic_auth(confidential_client.client_id, new)
    assert client_credentials(client, HTTP_AUTHORIZATION=auth).status_code == 200


@pytest.mark.parametrize("disable", ["client", "project"])
def test_disabled_client_or_inactive_project(client, confidential_client, disable):
    if disable == "client":
        confidential_client.status = "off"
        confidential_client.save()
    else:
        confidential_client.project.active = False
        confidential_client.project.save()
    auth = basic_auth(confidential_client.client_id, confidential_client.plaintext_secret)
    assert_invalid_client(client_credentials(client, HTTP_AUTHORIZATION=auth))
    assert_invalid_client(client_credentials(client, {"client_id": confidential_client.client_id,
                                                      "client_secret": confidential_client.plaintext_secret}))


@pytest.mark.spec("RFC 6749 §2.3")
def test_basic_client_id_must_match_body_client_id(client, oauth_project, confidential_client):
    other = ClientApplicationFactory(project=oauth_project)
    auth = basic_auth(confidential_client.client_id, confidential_client.plaintext_secret)
    assert_invalid_client(client_credentials(client, {"client_id": other.client_id}, HTTP_AUTHORIZATION=auth))
    ok = client_credentials(client, {"client_id": confidential_client.client_id}, HTTP_AUTHORIZATION=auth)
    assert ok.status_code == 200, ok.content


@pytest.mark.spec("RFC 6749 §2.3")
@pytest.mark.spec("RFC 6749 §5.2")
@pytest.mark.parametrize("case", ["public client, made-up secret", "public client, confidential client's Basic",
                                  "confidential client's Basic, wrong secret"])
def test_basic_credentials_are_never_ignored(client, flow, confidential_client, case):
    """A Basic header is checked even when the body names a public client (which needs none)."""
    code = obtain_code(flow)
    credentials = {
        "public client, made-up secret": (flow.app.client_id, "made-up"),
        "public client, confidential client's Basic": (confidential_client.client_id,
                                                        confidential_client.plaintext_secret),
        "confidential client's Basic, wrong secret": (confidential_client.client_id, "0" * 64),
    }[case]
    response = post_form(client, TOKEN, {
        "grant_type": "authorization_code", "code": code, "client_id": flow.app.client_id,
        "code_verifier": flow.verifier, "redirect_uri": REDIRECT_URI}, HTTP_AUTHORIZATION=basic_auth(*credentials))
    assert_invalid_client(response)
    assert flow.token(code).status_code == 200  # the refused request did not spend the code


@pytest.mark.spec("RFC 6749 §2.3")
def test_basic_auth_for_the_code_grant(client, confidential_client, patient):
    flow = Flow(client, confidential_client)
    code = obtain_code(flow)
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": flow.verifier,
            "redirect_uri": REDIRECT_URI}
    wrong = post_form(client, TOKEN, data, HTTP_AUTHORIZATION=basic_auth(confidential_client.client_id, "nope"))
    assert_invalid_client(wrong)
    auth = basic_auth(confidential_client.client_id, confidential_client.plaintext_secret, scheme="basic")
    ok = post_form(client, TOKEN, data, HTTP_AUTHORIZATION=auth)
    assert ok.status_code == 200, ok.content


# --- client_credentials -----------------------------------------------------------------------

@pytest.mark.spec("RFC 6749 §4.4")
def test_client_credentials_grant(client, confidential_client, oauth_project, issuer):
    auth = basic_auth(confidential_client.client_id, confidential_client.plaintext_secret)
    response = client_credentials(client, {"scope": "openid offline_access system/*.rs"}, HTTP_AUTHORIZATION=auth)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "openid offline_access system/*.rs"
    assert "refresh_token" not in body  # RFC 6749 §4.4.3: SHOULD NOT
    assert body["project"] == {"reference": f"Project/{oauth_project.pk}", "display": "Clinic"}
    assert body["profile"] == {"reference": f"ClientApplication/{confidential_client.client_id}"}
    assert "patient" not in body
    claims = verify_jwt(client, body["access_token"])[1]
    assert claims["sub"] == confidential_client.client_id
    assert claims["client_id"] == confidential_client.client_id
    assert claims["profile"] == f"ClientApplication/{confidential_client.client_id}"
    login = login_of(body["access_token"])
    assert login.auth_method == Login.Method.CLIENT
    assert login.user_id is None and login.membership_id is None
    assert login.client == confidential_client and login.project == oauth_project
    assert login.refresh_digest is None and login.granted_at is not None
    assert userinfo_status(client, body["access_token"]) == 200


def test_client_credentials_is_one_read_and_two_inserts(client, confidential_client):
    """It writes the login and its security event, and reads nothing else. On PostgreSQL without a
    transaction of its own (BEGIN and COMMIT would be two more round trips); on SQLite in one, so
    the two inserts take the write lock once and a lock timeout cannot leave one without the other."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    auth = basic_auth(confidential_client.client_id, confidential_client.plaintext_secret)
    with CaptureQueriesContext(connection) as captured:
        response = client_credentials(client, {"scope": "openid system/*.rs"}, HTTP_AUTHORIZATION=auth)
    assert response.status_code == 200, response.content
    statements = [q["sql"] for q in captured.captured_queries if "medplum_auth_signingkey" not in q["sql"]]
    if connection.vendor == "sqlite":
        assert any(sql.startswith(("SAVEPOINT", "BEGIN")) for sql in statements), statements
        statements = [sql for sql in statements if not sql.startswith(("SAVEPOINT", "RELEASE", "BEGIN", "COMMIT"))]
    assert [sql.split()[0] for sql in statements] == ["SELECT", "INSERT", "INSERT"], statements  # key cached 30 s
    assert "medplum_auth_securityevent" in statements[2]
    login = Login.objects.get(client=confidential_client, scope="openid system/*.rs")
    event = SecurityEvent.objects.get(subject=f"Login/{login.pk}")
    assert (event.event_type, event.actor_client, event.actor_user, event.project_id) == (
        "token.issued", confidential_client.client_id, "", confidential_client.project_id)


def test_client_credentials_never_issue_refresh_tokens(client, oauth_project):
    app = ClientApplicationFactory(project=oauth_project, always_issue_refresh_token=True)
    response = client_credentials(client, {"scope": "openid offline_access"},
                                  HTTP_AUTHORIZATION=basic_auth(app.client_id, app.plaintext_secret))
    assert response.status_code == 200
    assert "refresh_token" not in response.json()


def test_client_credentials_default_scope(client, confidential_client):
    response = client_credentials(client, HTTP_AUTHORIZATION=basic_auth(confidential_client.client_id,
                                                                        confidential_client.plaintext_secret))
    assert response.json()["scope"] == "openid"


def test_client_credentials_unknown_scope(client, confidential_client):
    response = client_credentials(client, {"scope": "openid launch/nonsense admin"},
                                  HTTP_AUTHORIZATION=basic_auth(confidential_client.client_id,
                                                                confidential_client.plaintext_secret))
    assert_oauth_error(response, "invalid_scope")


@pytest.mark.spec("RFC 6749 §4.4.2")
def test_public_client_cannot_use_client_credentials(client, public_client):
    response = client_credentials(client, {"client_id": public_client.client_id})
    assert_oauth_error(response, "invalid_client", status=401)
    assert not Login.objects.exists()


# --- private_key_jwt ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signing_keys() -> dict[str, jwk.JWK]:
    return {alg: jwk.JWK.generate(kid=f"key-{alg.lower()}", alg=alg, use="sig", **spec)
            for alg, spec in KEY_SPECS.items()}


def public_jwks(*keys: jwk.JWK) -> dict[str, Any]:
    return {"keys": [key.export_public(as_dict=True) for key in keys]}


def make_assertion(key: jwk.JWK, client_id: str, *, alg: str | None = None, header: dict[str, Any] | None = None,
                   omit: tuple[str, ...] = (), **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": client_id, "sub": client_id, "aud": token_url(), "iat": now, "exp": now + 120,
               "jti": str(uuid.uuid4()), **claims}
    for name in omit:
        payload.pop(name)
    alg = alg or key.get("alg")
    token = jwt.JWT(header={"alg": alg, "kid": key.get("kid"), "typ": "JWT", **(header or {})}, claims=payload)
    token.make_signed_token(key)
    return token.serialize()


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def assertion_data(assertion: str, **extra: str) -> dict[str, str]:
    return {"client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion, **extra}


@pytest.fixture
def jwt_client(oauth_project, signing_keys):
    return ClientApplicationFactory(project=oauth_project, plaintext_secret="", client_secret="",
                                    jwks=public_jwks(*signing_keys.values()))


@pytest.mark.spec("RFC 7523 §2.2")
@pytest.mark.spec("SMART 2.2 client-confidential-asymmetric")
@pytest.mark.parametrize("alg", list(KEY_SPECS))
def test_private_key_jwt(client, jwt_client, signing_keys, alg):
    assertion = make_assertion(signing_keys[alg], jwt_client.client_id)
    response = client_credentials(client, assertion_data(assertion, scope="system/*.rs"))
    assert response.status_code == 200, response.content
    body = response.json()
    assert verify_jwt(client, body["access_token"])[1]["client_id"] == jwt_client.client_id
    assert body["scope"] == "system/*.rs"


def test_private_key_jwt_with_client_id_in_body(client, jwt_client, signing_keys):
    assertion = make_assertion(signing_keys["RS256"], jwt_client.client_id)
    response = client_credentials(client, assertion_data(assertion, client_id=jwt_client.client_id))
    assert response.status_code == 200, response.content


def test_private_key_jwt_for_the_code_grant(client, jwt_client, signing_keys, patient):
    flow = Flow(client, jwt_client)
    code = obtain_code(flow)
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": flow.verifier,
            "redirect_uri": REDIRECT_URI}
    assert_invalid_client(post_form(client, TOKEN, data))  # confidential: authentication required
    response = post_form(client, TOKEN, {**data, **assertion_data(make_assertion(signing_keys["ES256"],
                                                                                jwt_client.client_id))})
    assert response.status_code == 200, response.content


def _bad_assertions() -> list[tuple[str, Any, str | None]]:
    """(case, function(keys, client_id) -> assertion, logged reason) for every rule of RFC 7523 §3 we enforce."""
    def none_alg(keys: dict[str, jwk.JWK], cid: str) -> str:
        now = int(time.time())
        claims = {"iss": cid, "sub": cid, "aud": token_url(), "exp": now + 60, "jti": str(uuid.uuid4())}
        return f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{b64url(claims)}."

    def hs256_with_public_key(keys: dict[str, jwk.JWK], cid: str) -> str:
        public_pem = keys["RS256"].export_to_pem(private_key=False)
        secret = jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(public_pem).rstrip(b"=").decode(), kid="key-rs256")
        return make_assertion(secret, cid, alg="HS256")

    def foreign_key_same_kid(keys: dict[str, jwk.JWK], cid: str) -> str:
        return make_assertion(jwk.JWK.generate(kty="EC", crv="P-256", kid="key-es256", alg="ES256"), cid)

    def unknown_kid(keys: dict[str, jwk.JWK], cid: str) -> str:
        return make_assertion(jwk.JWK.generate(kty="EC", crv="P-256", kid="unknown", alg="ES256"), cid)

    def tampered(keys: dict[str, jwk.JWK], cid: str) -> str:
        head, _payload, sig = make_assertion(keys["RS256"], cid).split(".")
        now = int(time.time())
        claims = {"iss": cid, "sub": cid, "aud": token_url(), "exp": now + 60, "jti": "tampered"}
        return f"{head}.{b64url(claims)}.{sig}"

    rs, aud, iss, exp, jti, sig, alg = ("RS256", "aud must be the token endpoint", "iss and sub must be the client id",
                                        "exp must be within five minutes", "missing jti", "bad signature",
                                        "unsupported algorithm")
    return [
        ("wrong aud", lambda k, c: make_assertion(k[rs], c, aud="https://other.example.org/oauth2/token"), aud),
        ("aud is the issuer", lambda k, c: make_assertion(k[rs], c, aud=auth_settings.ISSUER), aud),
        ("missing aud", lambda k, c: make_assertion(k[rs], c, omit=("aud",)), aud),
        ("iss differs from sub", lambda k, c: make_assertion(k[rs], c, sub="someone-else"), iss),
        ("missing sub", lambda k, c: make_assertion(k[rs], c, omit=("sub",)), iss),
        ("exp more than 5 min ahead", lambda k, c: make_assertion(k[rs], c, exp=int(time.time()) + 3600), exp),
        ("expired", lambda k, c: make_assertion(k[rs], c, exp=int(time.time()) - 120), exp),
        ("missing exp", lambda k, c: make_assertion(k[rs], c, omit=("exp",)), exp),
        ("missing jti", lambda k, c: make_assertion(k[rs], c, omit=("jti",)), jti),
        ("empty jti", lambda k, c: make_assertion(k[rs], c, jti=""), jti),
        ("unknown kid", unknown_kid, sig),
        ("foreign key with our kid", foreign_key_same_kid, sig),
        ("alg none", none_alg, alg),
        ("HS256 keyed with the public key", hs256_with_public_key, alg),
        ("RS512 not allowed", lambda k, c: make_assertion(k[rs], c, alg="RS512"), alg),
        ("tampered payload", tampered, sig),
        ("not a JWT", lambda k, c: "not-a-jwt", None),
    ]


@pytest.mark.spec("RFC 7523 §3")
@pytest.mark.parametrize("case, build, reason", _bad_assertions(), ids=[case for case, *_ in _bad_assertions()])
def test_private_key_jwt_refused(client, jwt_client, signing_keys, caplog, case, build, reason):
    caplog.set_level(logging.INFO, logger="medplum_auth.audit")
    response = client_credentials(client, assertion_data(build(signing_keys, jwt_client.client_id)))
    assert_invalid_client(response)
    assert not Login.objects.exists()
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("client assertion refused")]
    if reason is not None:  # refused for the reason under test, not an earlier one
        assert refusals == [f"client assertion refused client_id={jwt_client.client_id!r} reason={reason}"]


@pytest.mark.spec("RFC 7523 §3")
def test_private_key_jwt_jti_is_single_use(client, jwt_client, signing_keys):
    assertion = make_assertion(signing_keys["ES384"], jwt_client.client_id)
    assert client_credentials(client, assertion_data(assertion)).status_code == 200
    assert_invalid_client(client_credentials(client, assertion_data(assertion)))
    again = make_assertion(signing_keys["ES384"], jwt_client.client_id, jti="fixed-jti")
    assert client_credentials(client, assertion_data(again)).status_code == 200
    replay = make_assertion(signing_keys["RS384"], jwt_client.client_id, jti="fixed-jti")
    assert_invalid_client(client_credentials(client, assertion_data(replay)))


@pytest.mark.spec("RFC 7521 §4.2")
def test_private_key_jwt_wrong_assertion_type(client, jwt_client, signing_keys):
    assertion = make_assertion(signing_keys["RS256"], jwt_client.client_id)
    data = {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
            "client_assertion": assertion}
    assert_invalid_client(client_credentials(client, data))
    assert_invalid_client(client_credentials(client, {"client_assertion": assertion}))


def test_private_key_jwt_body_client_id_must_match(client, oauth_project, jwt_client, signing_keys):
    other = ClientApplicationFactory(project=oauth_project)
    assertion = make_assertion(signing_keys["RS256"], jwt_client.client_id)
    assert_invalid_client(client_credentials(client, assertion_data(assertion, client_id=other.client_id)))


def test_private_key_jwt_for_a_client_of_another_identity(client, oauth_project, jwt_client, signing_keys):
    """An assertion signed by client A's key but naming client B authenticates nobody."""
    other = ClientApplicationFactory(project=oauth_project, jwks=public_jwks(
        jwk.JWK.generate(kty="EC", crv="P-256", kid="key-es256", alg="ES256")))
    assertion = make_assertion(signing_keys["ES256"], other.client_id)
    assert_invalid_client(client_credentials(client, assertion_data(assertion)))


def test_private_key_jwt_public_client_refused(client, oauth_project, signing_keys):
    app = ClientApplicationFactory(project=oauth_project, public=True, jwks=public_jwks(signing_keys["RS256"]))
    assertion = make_assertion(signing_keys["RS256"], app.client_id)
    assert_invalid_client(client_credentials(client, assertion_data(assertion)))


class _JwksServer:
    """A JWKS document served on 127.0.0.1 from a thread; counts the fetches."""

    def __init__(self, document: dict[str, Any]):
        self.document = document
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.hits += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        # A unique path: fetched JWKS are cached by URL across tests.
        return f"http://127.0.0.1:{self.server.server_address[1]}/{uuid.uuid4().hex}/jwks.json"


@pytest.fixture
def jwks_server(signing_keys) -> Iterator[_JwksServer]:
    server = _JwksServer(public_jwks(signing_keys["RS256"], signing_keys["ES256"]))
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.mark.spec("RFC 7591 §2 jwks_uri")
def test_private_key_jwt_with_jwks_uri(client, oauth_project, signing_keys, jwks_server):
    app = ClientApplicationFactory(project=oauth_project, plaintext_secret="", client_secret="",
                                   jwks_uri=jwks_server.url)
    for alg in ("RS256", "ES256"):
        response = client_credentials(client, assertion_data(make_assertion(signing_keys[alg], app.client_id)))
        assert response.status_code == 200, response.content
    assert jwks_server.hits == 1  # cached
    not_published = make_assertion(signing_keys["ES384"], app.client_id)
    assert_invalid_client(client_credentials(client, assertion_data(not_published)))


def test_private_key_jwt_with_unreachable_jwks_uri(client, oauth_project, signing_keys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = ClientApplicationFactory(project=oauth_project, jwks_uri=f"http://127.0.0.1:{port}/jwks.json")
    assert_invalid_client(client_credentials(client, assertion_data(make_assertion(signing_keys["RS256"],
                                                                                   app.client_id))))


def test_private_key_jwt_client_without_keys(client, confidential_client, signing_keys):
    assertion = make_assertion(signing_keys["RS256"], confidential_client.client_id)
    assert_invalid_client(client_credentials(client, assertion_data(assertion)))


@pytest.mark.spec("RFC 7523 §3")
@pytest.mark.parametrize("jwks", [{"keys": [{"kty": "EC"}]}, {"keys": ["x"]}, {"keys": [{"kty": "bogus"}]}])
def test_a_malformed_inline_jwks_is_invalid_client_not_a_500(client, oauth_project, signing_keys, jwks):
    """The model accepts any key list (the admin may fix it later); an assertion against it is refused."""
    app = ClientApplicationFactory(project=oauth_project, plaintext_secret="", client_secret="", jwks=jwks)
    response = client_credentials(client, assertion_data(make_assertion(signing_keys["ES256"], app.client_id)))
    assert_invalid_client(response)
    assert not Login.objects.exists()
