"""DPoP (RFC 9449): proofs, sender-constrained tokens at the token endpoint, PAR and authorize,
and their use at userinfo, the FHIR API and introspection."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache
from django.test import Client

from medplum_auth import dpop
from medplum_auth.models import Login
from tests.factories import ClientApplicationFactory
from tests.oauth.conftest import (
    REDIRECT_URI,
    Flow,
    access_token_claims,
    assert_oauth_error,
    basic_auth,
    obtain_code,
    post_form,
    query,
)
from tests.oauth.dpop_client import TESTSERVER, DPoPKey, unsigned_proof

pytestmark = pytest.mark.spec("RFC 9449")

TOKEN = "/oauth2/token"
USERINFO = "/oauth2/userinfo"
FHIR_SEARCH = "/fhir/R4/Patient"


@pytest.fixture(autouse=True)
def fresh_replay_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def key() -> DPoPKey:
    return DPoPKey("ES256")


def verify(proof: str, method: str = "POST", path: str = TOKEN, **kwargs):
    return dpop.verify(proof, method=method, uris=(TESTSERVER + path,), **kwargs)


def token_request(http, data: dict, proof: str | None = None, **extra):
    if proof is not None:
        extra["HTTP_DPOP"] = proof
    return post_form(http, TOKEN, data, **extra)


def redeem(flow: Flow, code: str, proof: str | None):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "client_id": flow.app.client_id, "code_verifier": flow.verifier}
    return token_request(flow.client, data, proof)


def refresh(http, client_id: str, refresh_token: str, proof: str | None, **extra):
    return token_request(http, {"grant_type": "refresh_token", "refresh_token": refresh_token,
                                "client_id": client_id}, proof, **extra)


def dpop_tokens(flow: Flow, key: DPoPKey, **authorize) -> dict:
    response = redeem(flow, obtain_code(flow, scope="openid offline_access", **authorize), key.proof("POST", TOKEN))
    assert response.status_code == 200, response.content
    return response.json()


# --- the proof (RFC 9449 §4.3) -----------------------------------------------------------------


def test_rfc_7638_thumbprint_known_answer():
    """RFC 7638 §3.1's example key and thumbprint."""
    key = {"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
           "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRX"
                "jBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgd"
                "AZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFC"
                "ur-kEgU8awapJzKnqDKgw"}
    assert dpop.thumbprint(key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize("alg", ["ES256", "ES384", "RS256", "PS256"])
def test_a_good_proof_gives_the_thumbprint_of_its_key(db, alg):
    key = DPoPKey(alg)
    proof = verify(key.proof("POST", TOKEN))
    assert proof.jkt == key.jkt  # jwcrypto's thumbprint: two implementations agree
    assert dpop.valid_thumbprint(proof.jkt)


def test_htu_is_compared_without_query_and_fragment_and_normalized(db, key):
    proof = key.proof("GET", "HTTP://TestServer:80/fhir/R4/Patient?name=x#frag")
    assert verify(proof, "GET", "/fhir/R4/Patient").jkt == key.jkt
    for other in ("http://testserver/fhir/R4/Observation", "https://testserver/fhir/R4/Patient",
                  "http://testserver:8080/fhir/R4/Patient", "http://evil.example/fhir/R4/Patient"):
        with pytest.raises(dpop.DPoPError, match="htu"):
            verify(key.proof("GET", other), "GET", "/fhir/R4/Patient")


def bad_proofs(key: DPoPKey) -> dict[str, str]:
    other = DPoPKey("ES256")
    now = time.time()
    private = {**key.public_jwk, "d": key.key.export_private(as_dict=True)["d"]}
    return {
        "missing": "",
        "garbage": "not-a-jwt",
        "two headers": f"{key.proof('POST', TOKEN)}, {key.proof('POST', TOKEN)}",
        "typ JWT": key.proof("POST", TOKEN, header={"typ": "JWT"}),
        "no typ": unsigned_proof({"alg": "ES256", "jwk": key.public_jwk}, {"jti": "j", "htm": "POST",
                                                                           "htu": TESTSERVER + TOKEN, "iat": now}),
        "alg none": unsigned_proof({"typ": "dpop+jwt", "alg": "none", "jwk": key.public_jwk},
                                   {"jti": "j", "htm": "POST", "htu": TESTSERVER + TOKEN, "iat": now}, b""),
        "alg HS256": unsigned_proof({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}},
                                    {"jti": "j", "htm": "POST", "htu": TESTSERVER + TOKEN, "iat": now}),
        "no jwk": unsigned_proof({"typ": "dpop+jwt", "alg": "ES256"},
                                 {"jti": "j", "htm": "POST", "htu": TESTSERVER + TOKEN, "iat": now}),
        "private jwk": key.proof("POST", TOKEN, header={"jwk": private}),
        "signed by another key": key.proof("POST", TOKEN, signer=other),
        "jwk of another key": key.proof("POST", TOKEN, header={"jwk": other.public_jwk}),
        "EC key for RS256": unsigned_proof({"typ": "dpop+jwt", "alg": "RS256", "jwk": key.public_jwk},
                                           {"jti": "j", "htm": "POST", "htu": TESTSERVER + TOKEN, "iat": now}),
        "wrong htm": key.proof("GET", TOKEN),
        "lower-case htm": key.proof("post", TOKEN),
        "wrong htu": key.proof("POST", "/oauth2/par"),
        "no jti": key.proof("POST", TOKEN, claims={"jti": None}),
        "too old": key.proof("POST", TOKEN, iat=now - 61),
        "from the future": key.proof("POST", TOKEN, iat=now + 31),
        "iat a string": key.proof("POST", TOKEN, claims={"iat": str(int(now))}),
    }


@pytest.mark.parametrize("case", list(bad_proofs(DPoPKey("ES256"))))
def test_bad_proofs_are_invalid_dpop_proof(db, key, case):
    with pytest.raises(dpop.DPoPError) as raised:
        verify(bad_proofs(key)[case])
    assert raised.value.error == "invalid_dpop_proof" and raised.value.nonce is None


def test_a_short_rsa_key_is_refused(db):
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwcrypto import jwk

    weak = DPoPKey("RS256")
    weak.key = jwk.JWK.from_pyca(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(dpop.DPoPError, match="2048"):
        verify(weak.proof("POST", TOKEN))


def test_a_proof_is_accepted_once(db, key):
    proof = key.proof("POST", TOKEN, jti="same-jti")
    verify(proof)
    with pytest.raises(dpop.DPoPError, match="used before"):
        verify(proof)
    with pytest.raises(dpop.DPoPError, match="used before"):
        verify(key.proof("POST", TOKEN, jti="same-jti"))  # a new signature, the same jti
    # The same jti from another key is another client's proof.
    assert verify(DPoPKey().proof("POST", TOKEN, jti="same-jti")).jti == "same-jti"


def test_an_invalid_proof_takes_no_place_in_the_replay_cache(db, key):
    proof = key.proof("POST", TOKEN)
    with pytest.raises(dpop.DPoPError, match="htm"):
        verify(proof, method="GET")
    assert verify(proof).jkt == key.jkt


def test_ath_binds_the_proof_to_the_access_token(db, key):
    verify(key.proof("GET", USERINFO, access_token="token-a"), "GET", USERINFO, access_token="token-a")
    with pytest.raises(dpop.DPoPError, match="ath"):
        verify(key.proof("GET", USERINFO, access_token="token-b"), "GET", USERINFO, access_token="token-a")
    with pytest.raises(dpop.DPoPError, match="ath"):
        verify(key.proof("GET", USERINFO), "GET", USERINFO, access_token="token-a")


def test_server_nonces(db, key, settings):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "DPOP_NONCE_REQUIRED": True, "DPOP_NONCE_LIFETIME": 300}
    with pytest.raises(dpop.DPoPError) as raised:
        verify(key.proof("POST", TOKEN))
    assert raised.value.error == "use_dpop_nonce" and raised.value.nonce == dpop.current_nonce()
    assert verify(key.proof("POST", TOKEN, nonce=dpop.current_nonce())).jkt == key.jkt
    previous = dpop.current_nonce(time.time() - 300)
    assert verify(key.proof("POST", TOKEN, nonce=previous)).jkt == key.jkt  # the last window still counts
    stale = dpop.current_nonce(time.time() - 600)
    with pytest.raises(dpop.DPoPError, match="nonce"):
        verify(key.proof("POST", TOKEN, nonce=stale))
    forged = dpop.current_nonce().split(".")[0] + ".AAAAAAAAAAAAAAAAAAAAAA"
    with pytest.raises(dpop.DPoPError, match="nonce"):
        verify(key.proof("POST", TOKEN, nonce=forged))


# --- the token endpoint (RFC 9449 §5) -----------------------------------------------------------


def test_code_flow_issues_a_dpop_bound_access_token_and_binds_a_public_clients_refresh_token(client, public_client,
                                                                                          patient, key):
    flow = Flow(client, public_client)
    body = dpop_tokens(flow, key)
    assert body["token_type"] == "DPoP" and "dpop_jkt" not in body
    assert access_token_claims(body["access_token"])["cnf"] == {"jkt": key.jkt}
    login = Login.objects.get()
    assert login.dpop_jkt == key.jkt

    # The refresh token now needs a proof by the same key (RFC 9449 §5) ...
    missing = refresh(client, public_client.client_id, body["refresh_token"], None)
    assert_oauth_error(missing, "invalid_dpop_proof")
    other = refresh(client, public_client.client_id, body["refresh_token"], DPoPKey().proof("POST", TOKEN))
    assert_oauth_error(other, "invalid_dpop_proof")
    # ... and neither refused attempt spent it.
    renewed = refresh(client, public_client.client_id, body["refresh_token"], key.proof("POST", TOKEN))
    assert renewed.status_code == 200, renewed.content
    assert renewed.json()["token_type"] == "DPoP"
    assert access_token_claims(renewed.json()["access_token"])["cnf"] == {"jkt": key.jkt}


def test_a_confidential_clients_refresh_token_is_bound_by_client_authentication_not_a_key(
        client, confidential_client, patient, key):
    flow = Flow(client, confidential_client)
    code = obtain_code(flow, scope="openid offline_access")
    auth = {"HTTP_AUTHORIZATION": basic_auth(confidential_client.client_id, confidential_client.plaintext_secret)}
    response = token_request(client, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                                      "code_verifier": flow.verifier}, key.proof("POST", TOKEN), **auth)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["token_type"] == "DPoP" and Login.objects.get().dpop_jkt == ""
    new_key = DPoPKey("RS256")
    renewed = refresh(client, confidential_client.client_id, body["refresh_token"], new_key.proof("POST", TOKEN),
                      **auth)
    assert renewed.status_code == 200, renewed.content
    assert access_token_claims(renewed.json()["access_token"])["cnf"] == {"jkt": new_key.jkt}
    plain = refresh(client, confidential_client.client_id, renewed.json()["refresh_token"], None, **auth)
    assert plain.status_code == 200 and plain.json()["token_type"] == "Bearer"
    assert "cnf" not in access_token_claims(plain.json()["access_token"])


def test_a_bad_proof_is_refused_before_the_grant_is_touched(client, public_client, patient, key):
    flow = Flow(client, public_client)
    code = obtain_code(flow)
    refused = redeem(flow, code, key.proof("POST", "/oauth2/par"))
    body = assert_oauth_error(refused, "invalid_dpop_proof")
    assert "htu" in body["error_description"] and refused["Cache-Control"] == "no-store"
    assert Login.objects.get().code_redeemed_at is None  # the code is still good
    assert redeem(flow, code, key.proof("POST", TOKEN)).status_code == 200


def test_a_replayed_proof_is_refused_at_the_token_endpoint(client, public_client, patient, key):
    flow = Flow(client, public_client)
    proof = key.proof("POST", TOKEN)
    assert redeem(flow, obtain_code(flow), proof).status_code == 200
    assert_oauth_error(redeem(flow, obtain_code(flow), proof), "invalid_dpop_proof")


def test_dpop_jkt_binds_the_code_to_a_key(client, public_client, patient, key):
    flow = Flow(client, public_client)
    code = obtain_code(flow, dpop_jkt=key.jkt)
    assert Login.objects.get().dpop_jkt == key.jkt
    assert_oauth_error(redeem(flow, code, None), "invalid_dpop_proof")
    assert_oauth_error(redeem(flow, code, DPoPKey().proof("POST", TOKEN)), "invalid_dpop_proof")
    response = redeem(flow, code, key.proof("POST", TOKEN))
    assert response.status_code == 200, response.content
    assert access_token_claims(response.json()["access_token"])["cnf"] == {"jkt": key.jkt}


def test_a_malformed_dpop_jkt_is_an_authorization_error(client, public_client, patient):
    flow = Flow(client, public_client)
    response = flow.authorize(dpop_jkt="not-a-thumbprint")
    assert response.status_code == 302
    params = query(response["Location"])
    assert response["Location"].startswith(REDIRECT_URI) and params["error"] == "invalid_request"
    assert "dpop_jkt" in params["error_description"]


def test_a_client_that_requires_dpop_gets_no_bearer_tokens(client, oauth_project, key):
    app = ClientApplicationFactory(project=oauth_project, dpop_bound_access_tokens=True)
    auth = {"HTTP_AUTHORIZATION": basic_auth(app.client_id, app.plaintext_secret)}
    refused = token_request(client, {"grant_type": "client_credentials"}, None, **auth)
    assert_oauth_error(refused, "invalid_dpop_proof")
    assert not Login.objects.exists()
    response = token_request(client, {"grant_type": "client_credentials"}, key.proof("POST", TOKEN), **auth)
    assert response.status_code == 200, response.content
    assert response.json()["token_type"] == "DPoP"
    assert access_token_claims(response.json()["access_token"])["cnf"] == {"jkt": key.jkt}


def test_wrong_client_credentials_still_answer_invalid_client_with_a_good_proof(client, oauth_project, key):
    app = ClientApplicationFactory(project=oauth_project, dpop_bound_access_tokens=True)
    auth = {"HTTP_AUTHORIZATION": basic_auth(app.client_id, "wrong")}
    response = token_request(client, {"grant_type": "client_credentials"}, key.proof("POST", TOKEN), **auth)
    assert_oauth_error(response, "invalid_client", status=401)


def test_token_endpoint_nonce_round_trip(client, oauth_project, key, settings):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "DPOP_NONCE_REQUIRED": True}
    app = ClientApplicationFactory(project=oauth_project)
    auth = {"HTTP_AUTHORIZATION": basic_auth(app.client_id, app.plaintext_secret)}
    first = token_request(client, {"grant_type": "client_credentials"}, key.proof("POST", TOKEN), **auth)
    assert_oauth_error(first, "use_dpop_nonce")
    nonce = first["DPoP-Nonce"]
    assert nonce == dpop.current_nonce()
    second = token_request(client, {"grant_type": "client_credentials"}, key.proof("POST", TOKEN, nonce=nonce), **auth)
    assert second.status_code == 200, second.content
    assert second.json()["token_type"] == "DPoP" and second["DPoP-Nonce"] == nonce


# --- PAR (RFC 9449 §10.1) ----------------------------------------------------------------------


def test_a_proof_at_the_par_endpoint_binds_the_code(client, public_client, patient, key):
    flow = Flow(client, public_client)
    pushed = post_form(client, "/oauth2/par", flow.params(), HTTP_DPOP=key.proof("POST", "/oauth2/par"))
    assert pushed.status_code == 201, pushed.content
    response = client.get("/oauth2/authorize", {"client_id": public_client.client_id,
                                                "request_uri": pushed.json()["request_uri"]})
    response = flow.follow(flow.sign_in(response))
    code = query(response["Location"])["code"]
    assert Login.objects.get().dpop_jkt == key.jkt
    assert_oauth_error(redeem(flow, code, DPoPKey().proof("POST", TOKEN)), "invalid_dpop_proof")
    assert redeem(flow, code, key.proof("POST", TOKEN)).status_code == 200


def test_par_refuses_a_dpop_jkt_that_is_not_the_proofs_key(client, public_client, key):
    flow = Flow(client, public_client)
    response = post_form(client, "/oauth2/par", flow.params(dpop_jkt=DPoPKey().jkt),
                         HTTP_DPOP=key.proof("POST", "/oauth2/par"))
    assert_oauth_error(response, "invalid_dpop_proof")
    bad = post_form(client, "/oauth2/par", flow.params(), HTTP_DPOP=key.proof("POST", TOKEN))
    assert_oauth_error(bad, "invalid_dpop_proof")


# --- resource servers (RFC 9449 §7) ------------------------------------------------------------


@pytest.fixture
def bound(client, public_client, patient, key) -> str:
    return dpop_tokens(Flow(client, public_client), key)["access_token"]


def dpop_get(http, path: str, token: str, proof: str | None, scheme: str = "DPoP", **params):
    extra = {"HTTP_AUTHORIZATION": f"{scheme} {token}"}
    if proof is not None:
        extra["HTTP_DPOP"] = proof
    return http.get(path, params, **extra)


@pytest.mark.parametrize("path", [USERINFO, FHIR_SEARCH])
def test_a_bound_token_works_with_its_proof(path, bound, key):
    http = Client()
    response = dpop_get(http, path, bound, key.proof("GET", path, access_token=bound), _count="1")
    assert response.status_code == 200, response.content
    assert response.json().get("sub") or response.json()["resourceType"] == "Bundle"


def challenge(response) -> str:
    assert response.status_code == 401, response.content
    assert response["Cache-Control"] == "no-store"
    return response["WWW-Authenticate"]


@pytest.mark.parametrize("path", [USERINFO, FHIR_SEARCH])
def test_a_bound_token_sent_as_bearer_is_refused(path, bound):
    header = challenge(dpop_get(Client(), path, bound, None, scheme="Bearer"))
    assert header.startswith("DPoP algs=") and 'error="invalid_token"' in header


@pytest.mark.parametrize("path", [USERINFO, FHIR_SEARCH])
def test_a_bound_token_without_a_good_proof_is_refused(path, bound, key):
    http = Client()
    cases = {
        "no proof": None,
        "no ath": key.proof("GET", path),
        "another token's ath": key.proof("GET", path, access_token=bound + "x"),
        "wrong htm": key.proof("POST", path, access_token=bound),
        "wrong htu": key.proof("GET", "/fhir/R4/Observation", access_token=bound),
        "another key": DPoPKey().proof("GET", path, access_token=bound),
        "too old": key.proof("GET", path, access_token=bound, iat=time.time() - 120),
    }
    for case, proof in cases.items():
        header = challenge(dpop_get(http, path, bound, proof))
        assert header.startswith('DPoP algs="ES256 ES384 PS256 RS256"'), case
        assert 'error="invalid_dpop_proof"' in header, case
    proof = key.proof("GET", path, access_token=bound)
    assert dpop_get(http, path, bound, proof).status_code == 200
    assert 'error="invalid_dpop_proof"' in challenge(dpop_get(http, path, bound, proof))  # replayed


@pytest.mark.parametrize("path", [USERINFO, FHIR_SEARCH])
def test_an_unbound_token_sent_as_dpop_is_refused(path, client, public_client, patient, key):
    flow = Flow(client, public_client)
    plain = redeem(flow, obtain_code(flow), None).json()
    assert plain["token_type"] == "Bearer"
    token = plain["access_token"]
    header = challenge(dpop_get(Client(), path, token, key.proof("GET", path, access_token=token)))
    assert header.startswith("DPoP ") and 'error="invalid_token"' in header
    assert dpop_get(Client(), path, token, None, scheme="Bearer").status_code == 200


def test_resource_server_nonce(bound, key, settings):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "DPOP_NONCE_REQUIRED": True}
    http = Client()
    for path in (FHIR_SEARCH, USERINFO):
        first = dpop_get(http, path, bound, key.proof("GET", path, access_token=bound))
        header = challenge(first)
        assert 'error="use_dpop_nonce"' in header and first["DPoP-Nonce"] == dpop.current_nonce()
        retry = dpop_get(http, path, bound, key.proof("GET", path, access_token=bound, nonce=first["DPoP-Nonce"]))
        assert retry.status_code == 200, retry.content


def test_a_revoked_bound_token_is_invalid_token_in_a_dpop_challenge(bound, key):
    Login.objects.update(revoked_at=time.strftime("%Y-%m-%dT%H:%M:%SZ"))
    header = challenge(dpop_get(Client(), USERINFO, bound, key.proof("GET", USERINFO, access_token=bound)))
    assert header.startswith("DPoP ") and 'error="invalid_token"' in header


def test_introspection_reports_the_binding(client, oauth_project, public_client, patient, key):
    tokens = dpop_tokens(Flow(client, public_client), key)
    caller = ClientApplicationFactory(project=oauth_project)
    auth = {"HTTP_AUTHORIZATION": basic_auth(caller.client_id, caller.plaintext_secret)}
    access = post_form(Client(), "/oauth2/introspect", {"token": tokens["access_token"]}, **auth).json()
    assert access["active"] is True and access["token_type"] == "DPoP" and access["cnf"] == {"jkt": key.jkt}
    refresh_body = post_form(Client(), "/oauth2/introspect", {"token": tokens["refresh_token"]}, **auth).json()
    assert refresh_body["active"] is True and refresh_body["cnf"] == {"jkt": key.jkt}


def test_discovery_and_cors_advertise_dpop(db, client, settings):
    metadata = client.get("/.well-known/openid-configuration").json()
    assert metadata["dpop_signing_alg_values_supported"] == ["ES256", "ES384", "PS256", "RS256"]
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.org"]
    preflight = client.options(TOKEN, HTTP_ORIGIN="https://app.example.org",
                               HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
                               HTTP_ACCESS_CONTROL_REQUEST_HEADERS="dpop, content-type")
    assert "dpop" in preflight["Access-Control-Allow-Headers"].lower().split(", ")
    response = client.get("/.well-known/openid-configuration", HTTP_ORIGIN="https://app.example.org")
    assert "DPoP-Nonce" in response["Access-Control-Expose-Headers"]


# --- the per-client flag: dynamic registration (RFC 9449 §5.2) ---------------------------------


def test_a_registered_client_can_require_dpop(client, oauth_project, patient, key):
    import json

    from medplum_auth import services
    from medplum_auth.models import ClientApplication

    _row, initial = services.create_registration_token(oauth_project)
    bad = client.post("/oauth2/register", json.dumps({"redirect_uris": [REDIRECT_URI],
                                                       "dpop_bound_access_tokens": "yes"}),
                      content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {initial}")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_client_metadata"
    response = client.post("/oauth2/register", json.dumps({
        "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none", "dpop_bound_access_tokens": True}),
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {initial}")
    assert response.status_code == 201, response.content
    assert response.json()["dpop_bound_access_tokens"] is True
    registered = ClientApplication.objects.get(client_id=response.json()["client_id"])
    assert registered.dpop_bound_access_tokens is True
    read = client.get(response.json()["registration_client_uri"].replace("http://127.0.0.1:8000", ""),
                      HTTP_AUTHORIZATION=f"Bearer {response.json()['registration_access_token']}")
    assert read.json()["dpop_bound_access_tokens"] is True

    flow = Flow(client, registered)
    code = obtain_code(flow)
    assert_oauth_error(redeem(flow, code, None), "invalid_dpop_proof")
    granted = redeem(flow, code, key.proof("POST", TOKEN))
    assert granted.status_code == 200 and granted.json()["token_type"] == "DPoP"


def test_a_proof_costs_no_database_statement(bound, key, django_assert_num_queries):
    """The proof is checked from the request and the cache: userinfo stays one statement (the login)."""
    http = Client()
    assert dpop_get(http, USERINFO, bound, key.proof("GET", USERINFO, access_token=bound)).status_code == 200
    with django_assert_num_queries(1):  # after the first request, which loaded the signing key
        response = dpop_get(http, USERINFO, bound, key.proof("GET", USERINFO, access_token=bound))
    assert response.status_code == 200
