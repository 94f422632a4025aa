"""Medplum's JSON login API: ``POST /auth/login``, ``POST /auth/profile`` and ``GET /auth/me``
(embedded login in custom UIs, ``@medplum/core`` ``startLogin`` + ``processCode``)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from medplum_auth.models import Login
from tests.factories import (
    DEFAULT_PASSWORD,
    AccessPolicyFactory,
    ClientApplicationFactory,
    MembershipFactory,
    ProjectFactory,
    UserFactory,
)
from tests.oauth.conftest import (
    REDIRECT_URI,
    assert_oauth_error,
    basic_auth,
    login_of,
    pkce_pair,
    post_form,
    query,
    verify_jwt,
)

INVALID_CREDENTIALS = "Email or password is invalid"



@pytest.fixture
def pkce() -> tuple[str, str]:
    return pkce_pair()


def post_json(http: Any, path: str, data: Any, **extra: Any):
    return http.post(path, json.dumps(data), content_type="application/json", **extra)


def login_body(app: Any, challenge: str | None, **overrides: Any) -> dict[str, Any]:
    body = {"email": "pat@example.org", "password": DEFAULT_PASSWORD, "clientId": app.client_id,
            "codeChallenge": challenge, "codeChallengeMethod": "S256", "scope": "openid"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def assert_outcome(response, text: str, status: int = 400) -> None:
    """Medplum's error shape: an OperationOutcome with one error issue."""
    assert response.status_code == status, (response.status_code, response.content)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    issue = body["issue"][0]
    assert issue["severity"] == "error"
    assert issue["details"]["text"] == text, body


def redeem(http: Any, app: Any, code: str, verifier: str | None, **extra: str):
    """``processCode`` as ``@medplum/core`` does it: no redirect_uri (or ``''`` in Node)."""
    data = {"grant_type": "authorization_code", "code": code, "client_id": app.client_id,
            "code_verifier": verifier, **extra}
    return post_form(http, "/oauth2/token", data)


@pytest.fixture
def two_profiles(oauth_project, patient):
    """The patient user is also a Practitioner in the same project."""
    return MembershipFactory(project=oauth_project, user=patient.user, profile_type="Practitioner",
                             profile_display="Dr Pat Lee")


# --- /auth/login: request checks --------------------------------------------------------------

@pytest.mark.parametrize("content_type, body", [
    ("application/x-www-form-urlencoded", "email=pat%40example.org&password=x"),
    ("text/plain", '{"email": "pat@example.org"}'),
    ("application/json", "not json"),
    ("application/json", '["a list"]'),
])
def test_login_accepts_json_objects_only(client, public_client, patient, content_type, body):
    """A cross-site form cannot post JSON without a CORS preflight: no login CSRF."""
    response = client.post("/auth/login", body, content_type=content_type)
    assert_outcome(response, "Request body must be a JSON object (Content-Type: application/json).")
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("email, password", [
    ("pat@example.org", "wrong password"),
    ("nobody@example.org", DEFAULT_PASSWORD),
    ("PAT@example.org", "wrong password"),
])
def test_wrong_credentials_look_alike(client, public_client, patient, pkce, email, password):
    response = post_json(client, "/auth/login", login_body(public_client, pkce[1], email=email, password=password))
    assert_outcome(response, INVALID_CREDENTIALS)
    assert not Login.objects.exists()
    assert "_auth_user_id" not in client.session


def test_email_is_case_insensitive(client, public_client, patient, pkce):
    response = post_json(client, "/auth/login", login_body(public_client, pkce[1], email="Pat@Example.org"))
    assert response.status_code == 200, response.content


def test_repeated_failures_are_throttled(client, public_client, patient, pkce, settings):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "SIGNIN_MAX_FAILURES": 3}
    for _ in range(3):
        post_json(client, "/auth/login", login_body(public_client, pkce[1], password="nope"))
    response = post_json(client, "/auth/login", login_body(public_client, pkce[1]))
    assert_outcome(response, "Too many failed sign-in attempts. Try again later.")
    assert not Login.objects.exists()


def test_failures_behind_a_trusted_proxy_count_per_forwarded_address(client, public_client, patient, pkce, settings):
    """Behind a proxy every request has the proxy's REMOTE_ADDR: counting by it would let one
    attacker lock every user out. With TRUSTED_PROXY_HEADER the client's own address counts."""
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "SIGNIN_MAX_FAILURES": 3,
                             "TRUSTED_PROXY_HEADER": "X-Forwarded-For"}
    attacker = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "198.51.100.1, 203.0.113.5"}
    user = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    for _ in range(3):
        post_json(client, "/auth/login", login_body(public_client, pkce[1], password="nope"), **attacker)
    refused = post_json(client, "/auth/login", login_body(public_client, pkce[1]), **attacker)
    assert refused.status_code == 400
    assert "Too many" in refused.json()["issue"][0]["details"]["text"]
    assert not Login.objects.exists()

    response = post_json(Client(), "/auth/login", login_body(public_client, pkce[1]), **user)
    assert response.status_code == 200, response.content
    assert Login.objects.get().remote_addr == "203.0.113.9"


@pytest.mark.parametrize("overrides, text", [
    ({"email": None}, "Missing email"),
    ({"password": None}, "Missing password"),
    ({"email": 42}, "Missing email"),
    ({"clientId": None}, "Missing clientId"),
    ({"clientId": "no-such-client"}, "Invalid clientId"),
    ({"scope": "openid superuser"}, "Invalid scope"),
])
def test_login_request_checks(client, public_client, patient, pkce, overrides, text):
    response = post_json(client, "/auth/login", login_body(public_client, pkce[1], **overrides))
    assert_outcome(response, text)
    assert not Login.objects.exists()


@pytest.mark.parametrize("disable", ["client", "project"])
def test_login_to_a_disabled_client(client, public_client, patient, pkce, disable):
    if disable == "client":
        public_client.status = "off"
        public_client.save()
    else:
        public_client.project.active = False
        public_client.project.save()
    assert_outcome(post_json(client, "/auth/login", login_body(public_client, pkce[1])), "Invalid clientId")


def test_project_id_must_match_the_client(client, public_client, patient, pkce, oauth_project):
    other = ProjectFactory()
    response = post_json(client, "/auth/login", login_body(public_client, pkce[1], projectId=str(other.pk)))
    assert_outcome(response, "Invalid projectId")
    ok = post_json(client, "/auth/login", login_body(public_client, pkce[1], projectId=str(oauth_project.pk)))
    assert ok.status_code == 200, ok.content


@pytest.mark.parametrize("origin, ok", [("https://app.example.org", True), ("https://evil.example.org", False),
                                        ("https://app.example.org:8443", False), (None, True)])
def test_allowed_origins(client, oauth_project, patient, pkce, origin, ok):
    app = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=REDIRECT_URI,
                                   allowed_origins="https://app.example.org\nhttps://admin.example.org")
    headers = {"HTTP_ORIGIN": origin} if origin else {}
    response = post_json(client, "/auth/login", login_body(app, pkce[1]), **headers)
    if ok:
        assert response.status_code == 200, response.content
    else:
        assert_outcome(response, "Invalid origin")
        assert not Login.objects.exists()


@pytest.mark.spec("RFC 7636 §4.4.1")
@pytest.mark.spec("SMART 2.2 S256-only PKCE")
@pytest.mark.parametrize("overrides, text", [
    ({"codeChallenge": None, "codeChallengeMethod": None}, "Missing codeChallenge"),
    ({"codeChallenge": None}, "Missing codeChallenge"),
    ({"codeChallengeMethod": "plain"}, "Invalid codeChallengeMethod: only S256 is supported"),
    ({"codeChallengeMethod": None}, "Invalid codeChallengeMethod: only S256 is supported"),
])
def test_pkce_is_required(client, public_client, patient, pkce, overrides, text):
    response = post_json(client, "/auth/login", login_body(public_client, pkce[1], **overrides))
    assert_outcome(response, text)


def test_pkce_optional_client(client, oauth_project, patient):
    app = ClientApplicationFactory(project=oauth_project, redirect_uris=REDIRECT_URI, pkce_optional=True)
    response = post_json(client, "/auth/login", login_body(app, None, codeChallengeMethod=None))
    assert response.status_code == 200, response.content
    code = response.json()["code"]
    assert_oauth_error(redeem(client, app, code, None), "invalid_client", status=401)
    ok = redeem(client, app, code, None, client_secret=app.plaintext_secret)
    assert ok.status_code == 200, ok.content
    # A pkce_optional client that sends PKCE still gets it checked.
    verifier, challenge = pkce_pair()
    plain = post_json(client, "/auth/login", login_body(app, challenge, codeChallengeMethod="plain"))
    assert_outcome(plain, "Invalid codeChallengeMethod: only S256 is supported")


# --- /auth/login → code → /oauth2/token ----------------------------------------------------------

@pytest.mark.spec("Medplum embedded login")
@pytest.mark.parametrize("redirect_uri", [None, ""], ids=["omitted", "empty"])
def test_one_membership_gets_a_code_that_trades(client, public_client, patient, pkce, oauth_project, redirect_uri):
    response = post_json(client, "/auth/login", login_body(public_client, pkce[1], nonce="nonce-1",
                                                           scope="openid offline_access"))
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"login", "code"}
    login = Login.objects.get(pk=body["login"])
    assert login.membership == patient and login.client == public_client
    assert login.code_challenge == pkce[1] and login.code_challenge_method == "S256"

    extra = {} if redirect_uri is None else {"redirect_uri": redirect_uri}
    tokens = redeem(client, public_client, body["code"], pkce[0], **extra)
    assert tokens.status_code == 200, tokens.content
    tokens = tokens.json()
    claims = verify_jwt(client, tokens["access_token"])[1]
    assert claims["login_id"] == body["login"]
    assert claims["client_id"] == public_client.client_id
    assert tokens["project"]["reference"] == f"Project/{oauth_project.pk}"
    assert tokens["profile"]["reference"] == patient.profile
    assert "refresh_token" in tokens
    assert verify_jwt(client, tokens["id_token"])[1]["nonce"] == "nonce-1"
    assert_oauth_error(redeem(client, public_client, body["code"], pkce[0]), "invalid_grant",
                       description="Token already granted")


@pytest.mark.spec("Medplum embedded login")
def test_two_memberships_choose_a_profile(client, public_client, patient, two_profiles, pkce, oauth_project):
    response = post_json(client, "/auth/login", login_body(public_client, pkce[1]))
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"login", "memberships"}
    listed = {m["id"]: m for m in body["memberships"]}
    assert set(listed) == {str(patient.pk), str(two_profiles.pk)}
    doctor = listed[str(two_profiles.pk)]
    assert doctor["project"] == {"reference": f"Project/{oauth_project.pk}", "display": "Clinic"}
    assert doctor["profile"] == {"reference": two_profiles.profile, "display": "Dr Pat Lee"}
    login = Login.objects.get(pk=body["login"])
    assert login.membership is None and login.code_digest is None  # no code before the choice

    chosen = post_json(client, "/auth/profile", {"login": body["login"], "profile": str(two_profiles.pk)})
    assert chosen.status_code == 200, chosen.content
    assert set(chosen.json()) == {"login", "code"}
    assert chosen.json()["login"] == body["login"]
    tokens = redeem(client, public_client, chosen.json()["code"], pkce[0])
    assert tokens.status_code == 200, tokens.content
    assert tokens.json()["profile"]["reference"] == two_profiles.profile
    assert "patient" not in tokens.json()


@pytest.mark.parametrize("resource_type", ["Practitioner", "Patient"])
def test_resource_type_filter(client, public_client, patient, two_profiles, pkce, resource_type):
    response = post_json(client, "/auth/login", login_body(public_client, pkce[1], resourceType=resource_type))
    assert response.status_code == 200, response.content
    login = Login.objects.get(pk=response.json()["login"])
    assert login.membership.profile_type == resource_type
    assert "code" in response.json()


def test_resource_type_without_a_match(client, public_client, patient, pkce):
    response = post_json(client, "/auth/login", login_body(public_client, pkce[1], resourceType="RelatedPerson"))
    assert_outcome(response, "User not found")


def test_user_without_membership_in_the_clients_project(client, public_client, pkce):
    other = MembershipFactory(project=ProjectFactory(), user=UserFactory(email="x@example.org",
                                                                         username="x@example.org"))
    response = post_json(client, "/auth/login", login_body(public_client, pkce[1], email=other.user.email))
    assert_outcome(response, "User not found")


def test_inactive_membership_is_not_offered(client, public_client, patient, two_profiles, pkce):
    two_profiles.active = False
    two_profiles.save()
    body = post_json(client, "/auth/login", login_body(public_client, pkce[1])).json()
    assert "code" in body and Login.objects.get(pk=body["login"]).membership == patient


@pytest.fixture
def pending_login(client, public_client, patient, two_profiles, pkce) -> str:
    response = post_json(client, "/auth/login", login_body(public_client, pkce[1]))
    return response.json()["login"]


@pytest.mark.parametrize("case", ["another user's membership", "another project's membership", "inactive",
                                  "garbage profile", "missing profile"])
def test_profile_must_be_the_users_own(client, pending_login, two_profiles, oauth_project, case):
    if case == "another user's membership":
        profile = str(MembershipFactory(project=oauth_project).pk)
    elif case == "another project's membership":
        profile = str(MembershipFactory(project=ProjectFactory(), user=two_profiles.user).pk)
    elif case == "inactive":
        two_profiles.active = False
        two_profiles.save()
        profile = str(two_profiles.pk)
    elif case == "garbage profile":
        profile = "not-a-uuid"
    else:
        profile = None
    data = {"login": pending_login, "profile": profile} if profile else {"login": pending_login}
    assert_outcome(post_json(client, "/auth/profile", data), "Invalid profile")
    assert Login.objects.get(pk=pending_login).code_digest is None


@pytest.mark.parametrize("case", ["reused", "garbage", "unknown", "revoked", "stale", "code login"])
def test_profile_needs_a_fresh_pending_login(client, public_client, pending_login, patient, two_profiles, pkce,
                                             case):
    login = pending_login
    if case == "reused":
        first = post_json(client, "/auth/profile", {"login": login, "profile": str(two_profiles.pk)})
        assert first.status_code == 200
    elif case == "garbage":
        login = "garbage"
    elif case == "unknown":
        login = str(uuid.uuid4())
    elif case == "revoked":
        Login.objects.filter(pk=login).update(revoked_at=timezone.now())
    elif case == "stale":
        Login.objects.filter(pk=login).update(created=timezone.now() - timedelta(hours=1))
    else:
        two_profiles.active = False
        two_profiles.save()
        login = post_json(client, "/auth/login", login_body(public_client, pkce[1])).json()["login"]
    response = post_json(client, "/auth/profile", {"login": login, "profile": str(patient.pk)})
    assert_outcome(response, "Invalid login")


def test_profile_requires_json(client, pending_login, two_profiles):
    response = client.post("/auth/profile", {"login": pending_login, "profile": str(two_profiles.pk)})
    assert response.status_code == 400
    assert Login.objects.get(pk=pending_login).code_digest is None


@pytest.mark.spec("OIDC Core §3.1.2.1 prompt=none")
def test_login_establishes_the_browser_session(client, public_client, patient, pkce):
    assert post_json(client, "/auth/login", login_body(public_client, pkce[1])).status_code == 200
    assert client.session["_auth_user_id"] == str(patient.user_id)
    verifier, challenge = pkce_pair()
    response = client.get("/oauth2/authorize", {
        "response_type": "code", "client_id": public_client.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid", "state": "s", "prompt": "none", "code_challenge": challenge,
        "code_challenge_method": "S256"})
    assert response.status_code == 302
    assert response["Location"].startswith(REDIRECT_URI + "?"), response["Location"]
    params = query(response["Location"])
    assert "error" not in params, params
    tokens = post_form(client, "/oauth2/token", {"grant_type": "authorization_code", "code": params["code"],
                                                 "client_id": public_client.client_id,
                                                 "redirect_uri": REDIRECT_URI, "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.content


def test_failed_login_establishes_no_session(client, public_client, patient, pkce):
    post_json(client, "/auth/login", login_body(public_client, pkce[1], password="wrong"))
    response = client.get("/oauth2/authorize", {
        "response_type": "code", "client_id": public_client.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid", "prompt": "none", "code_challenge": pkce[1], "code_challenge_method": "S256"})
    assert query(response["Location"])["error"] == "login_required"


# --- /auth/me -------------------------------------------------------------------------------

def tokens_via_api(http: Any, app: Any, **overrides: Any) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    body = post_json(http, "/auth/login", login_body(app, challenge, **overrides)).json()
    response = redeem(http, app, body["code"], verifier)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.spec("Medplum SessionDetails")
def test_me(client, oauth_project, public_client):
    policy = AccessPolicyFactory(project=oauth_project, resources=[
        {"resourceType": "Patient", "criteria": "Patient?_id=%patient.id", "interaction": ["read", "search"]},
        {"resourceType": "Observation", "criteria": "Observation?subject=%patient", "interaction": ["read"]},
        {"resourceType": "Questionnaire", "interaction": ["read"]},
    ])
    user = UserFactory(email="pat@example.org", username="pat@example.org", first_name="Pat", last_name="Lee")
    membership = MembershipFactory(project=oauth_project, user=user, profile_type="Patient", access_policy=policy,
                                   admin=True, profile_display="Pat Lee")
    tokens = tokens_via_api(client, public_client)
    response = client.get("/auth/me", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    me = response.json()
    assert me["user"] == {"resourceType": "User", "id": str(user.pk), "email": "pat@example.org"}
    assert me["project"]["id"] == str(oauth_project.pk)
    assert me["project"]["name"] == "Clinic"
    assert me["membership"]["id"] == str(membership.pk)
    assert me["membership"]["admin"] is True
    assert me["membership"]["profile"]["reference"] == membership.profile
    assert me["profile"]["resourceType"] == "Patient"
    assert me["profile"]["id"] == membership.profile_id
    assert me["profile"]["name"] == [{"given": ["Pat"], "family": "Lee"}]
    assert me["config"]["resourceType"] == "UserConfiguration"
    rules = me["accessPolicy"]["resource"]
    assert me["accessPolicy"]["resourceType"] == "AccessPolicy"
    assert rules[0]["criteria"] == f"Patient?_id={membership.profile_id}"
    assert rules[1]["criteria"] == f"Observation?subject=Patient/{membership.profile_id}"
    assert "%" not in json.dumps(rules)
    assert rules[2] == {"resourceType": "Questionnaire", "interaction": ["read"]}
    # @medplum/core compares getReferenceString(profile) with the token's profile claim.
    claims = verify_jwt(client, tokens["access_token"])[1]
    assert f"{me['profile']['resourceType']}/{me['profile']['id']}" == claims["profile"]


def test_me_without_policy_means_full_access(client, public_client, patient):
    tokens = tokens_via_api(client, public_client)
    me = client.get("/auth/me", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}").json()
    assert me["accessPolicy"]["resource"] == [{"resourceType": "*"}]
    assert me["membership"]["admin"] is False


def test_me_for_a_client_credentials_token(client, confidential_client):
    response = post_form(client, "/oauth2/token", {"grant_type": "client_credentials"},
                         HTTP_AUTHORIZATION=basic_auth(confidential_client.client_id,
                                                       confidential_client.plaintext_secret))
    me = client.get("/auth/me", HTTP_AUTHORIZATION=f"Bearer {response.json()['access_token']}").json()
    assert me["project"]["name"] == "Clinic"
    assert "user" not in me
    # Medplum's profile of a client login is the ClientApplication; @medplum/core reads profile.id
    # after startClientLogin() (without it the SDK throws).
    reference = f"ClientApplication/{confidential_client.client_id}"
    assert me["profile"] == {"resourceType": "ClientApplication", "id": confidential_client.client_id,
                             "name": confidential_client.name}
    assert me["membership"]["profile"] == {"reference": reference, "display": confidential_client.name}
    assert me["membership"]["admin"] is False
    assert me["accessPolicy"]["resource"] == [{"resourceType": "*"}]  # no client policy: full access
    assert response.json()["profile"]["reference"] == reference


@pytest.mark.parametrize("case", ["no token", "garbage", "id_token", "revoked", "basic"])
def test_me_needs_a_valid_access_token(client, public_client, patient, case):
    tokens = tokens_via_api(client, public_client)
    headers = {"no token": {}, "garbage": {"HTTP_AUTHORIZATION": "Bearer garbage"},
               "id_token": {"HTTP_AUTHORIZATION": f"Bearer {tokens['id_token']}"},
               "revoked": {"HTTP_AUTHORIZATION": f"Bearer {tokens['access_token']}"},
               "basic": {"HTTP_AUTHORIZATION": basic_auth(public_client.client_id, "x")}}[case]
    if case == "revoked":
        login = login_of(tokens["access_token"])
        Login.objects.filter(pk=login.pk).update(revoked_at=timezone.now())
    response = Client().get("/auth/me", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer ")
