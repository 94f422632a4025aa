"""Statements per request of each hot scenario (issue 11; ``bench/README.md`` publishes the same
figures): a change that adds a round trip to one of these paths fails here, not only in ``bench/``.

Each path is called once first, so per-process caches (signing keys, the JWK Set) are warm, as in
a running server. The revocation check of a Bearer token's login stays: one statement.
"""

from __future__ import annotations

import json

import pytest

from medplum_auth.models import Login
from tests.factories import DEFAULT_PASSWORD
from tests.oauth.conftest import REDIRECT_URI, basic_auth, pkce_pair, post_form, query

#: scenario → statements (SELECT/INSERT/UPDATE, plus SAVEPOINTs of the test transaction on atomic blocks)
BUDGET = {
    "jwks": 0,
    "discovery": 0,
    "userinfo": 1,
    "fhir_read": 2,
    "client_credentials": 5,  # SELECT client, INSERT login, INSERT event (+ SAVEPOINT/RELEASE: SQLite runs it atomic)
    "refresh_token": 8,
    "authorize_prompt_none": 8,
    "code_exchange": 7,
    "auth_login": 16,
}


@pytest.fixture
def signed_in(flow):
    """A signed-in browser that consented: its token response (code flow with offline_access)."""
    return flow.tokens(scope="openid profile email fhirUser offline_access")


def test_jwks_and_discovery(client, django_assert_max_num_queries, db):
    for path, name in (("/.well-known/jwks.json", "jwks"), ("/.well-known/openid-configuration", "discovery")):
        assert client.get(path).status_code == 200
        with django_assert_max_num_queries(BUDGET[name]):
            assert client.get(path).status_code == 200


def test_userinfo_is_one_statement_the_revocation_check(client, signed_in, django_assert_max_num_queries):
    bearer = f"Bearer {signed_in['access_token']}"
    assert client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=bearer).status_code == 200
    with django_assert_max_num_queries(BUDGET["userinfo"]):
        response = client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=bearer)
    assert response.status_code == 200 and response.json()["email"] == "pat@example.org"
    Login.objects.update(revoked_at=Login.objects.first().auth_time)  # the check is still made every time
    with django_assert_max_num_queries(BUDGET["userinfo"]):
        assert client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=bearer).status_code == 401


def test_fhir_read_of_own_patient(client, signed_in, patient, django_assert_max_num_queries):
    from fhir_api.repository import Repository

    Repository(patient.project_id, None).create("Patient", {"resourceType": "Patient", "name": [{"family": "Lee"}]},
                                                resource_id=patient.profile_id)
    path = f"/fhir/R4/{patient.profile}"
    headers = {"HTTP_AUTHORIZATION": f"Bearer {signed_in['access_token']}", "HTTP_ACCEPT": "application/fhir+json"}
    first = client.get(path, **headers)
    with django_assert_max_num_queries(BUDGET["fhir_read"]):
        again = client.get(path, **headers)
    assert first.status_code == again.status_code == 200, again.content
    assert json.loads(again.content)["id"] == patient.profile_id


def test_client_credentials(client, confidential_client, django_assert_max_num_queries):
    from medplum_auth.services import rotate_client_secret

    secret = rotate_client_secret(confidential_client)
    auth = {"HTTP_AUTHORIZATION": basic_auth(confidential_client.client_id, secret)}
    assert post_form(client, "/oauth2/token", {"grant_type": "client_credentials"}, **auth).status_code == 200
    with django_assert_max_num_queries(BUDGET["client_credentials"]):
        response = post_form(client, "/oauth2/token", {"grant_type": "client_credentials"}, **auth)
    assert response.status_code == 200 and response.json()["token_type"] == "Bearer"


def test_refresh_token(client, public_client, signed_in, django_assert_max_num_queries):
    def refresh(token: str):
        return post_form(client, "/oauth2/token", {"grant_type": "refresh_token", "client_id": public_client.client_id,
                                                    "refresh_token": token})
    first = refresh(signed_in["refresh_token"])
    assert first.status_code == 200, first.content
    with django_assert_max_num_queries(BUDGET["refresh_token"]):
        response = refresh(first.json()["refresh_token"])
    assert response.status_code == 200 and response.json()["refresh_token"]


def test_authorize_prompt_none_and_code_exchange(client, flow, signed_in, django_assert_max_num_queries):
    with django_assert_max_num_queries(BUDGET["authorize_prompt_none"]):
        response = flow.authorize(prompt="none", scope="openid profile email fhirUser offline_access")
    assert response.status_code == 302 and response["Location"].startswith(REDIRECT_URI)
    code = query(response["Location"])["code"]
    with django_assert_max_num_queries(BUDGET["code_exchange"]):
        token = flow.token(code)
    assert token.status_code == 200 and token.json()["id_token"]


def test_auth_login(client, public_client, patient, django_assert_max_num_queries):
    def login():
        body = {"email": "pat@example.org", "password": DEFAULT_PASSWORD, "clientId": public_client.client_id,
                "codeChallenge": pkce_pair()[1], "codeChallengeMethod": "S256", "scope": "openid"}
        return client.post("/auth/login", json.dumps(body), content_type="application/json")
    assert login().status_code == 200
    with django_assert_max_num_queries(BUDGET["auth_login"]):
        response = login()
    assert response.status_code == 200 and response.json()["code"]
