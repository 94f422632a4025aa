"""``POST /oauth2/token`` with the authorization_code grant: request format, code and PKCE
binding, client authentication by type, and the shape of the tokens it issues."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from medplum_auth.conf import auth_settings
from medplum_auth.models import Login
from medplum_auth.oauth2_validators import token_digest
from tests.factories import ClientApplicationFactory, MembershipFactory, UserFactory
from tests.oauth.conftest import (
    REDIRECT_URI,
    Flow,
    assert_no_store,
    assert_oauth_error,
    basic_auth,
    login_of,
    obtain_code,
    obtain_tokens,
    post_form,
    token_hash,
    userinfo_status,
    verify_jwt,
)

OTHER_REDIRECT_URI = "https://app.example.org/other"


@pytest.fixture
def pkce_optional_client(oauth_project):
    return ClientApplicationFactory(project=oauth_project, redirect_uris=REDIRECT_URI, pkce_optional=True,
                                    name="Legacy backend")


@pytest.fixture
def confidential_flow(client, confidential_client, patient):
    return Flow(client, confidential_client)


# --- request format -------------------------------------------------------------------------

@pytest.mark.spec("RFC 6749 §3.2")
def test_json_body_is_refused(client, flow):
    code = obtain_code(flow)
    body = {"grant_type": "authorization_code", "code": code, "client_id": flow.app.client_id,
            "code_verifier": flow.verifier, "redirect_uri": REDIRECT_URI}
    response = client.post("/oauth2/token", json.dumps(body), content_type="application/json")
    assert_oauth_error(response, "invalid_request")
    assert_no_store(response)
    assert flow.token(code).status_code == 200  # the refused request did not spend the code


@pytest.mark.spec("RFC 6749 §5.2")
def test_missing_grant_type(client, public_client):
    response = post_form(client, "/oauth2/token", {"client_id": public_client.client_id, "code": "x"})
    assert_oauth_error(response, "invalid_request", description="Missing grant_type.")
    assert_no_store(response)


@pytest.mark.spec("RFC 6749 §5.2")
@pytest.mark.parametrize("grant_type, extra", [
    ("password", {"username": "pat@example.org", "password": "correct horse battery staple"}),
    ("implicit", {}),
    ("token", {}),
    ("urn:ietf:params:oauth:grant-type:jwt-bearer", {"assertion": "a.b.c"}),
    ("urn:ietf:params:oauth:grant-type:device_code", {"device_code": "x"}),
    ("made_up", {}),
    ("password", {"code": "x"}),  # issue 15 (1): oauthlib would route it to the code grant
    ("refresh_token ", {"code": "x"}),
])
def test_unsupported_grant_types(client, public_client, patient, grant_type, extra):
    """RFC 9700 §2.4: no resource owner password grant; no implicit or other grants either."""
    data = {"grant_type": grant_type, "client_id": public_client.client_id, **extra}
    response = post_form(client, "/oauth2/token", data)
    assert_oauth_error(response, "unsupported_grant_type")
    assert_no_store(response)
    assert not Login.objects.exists()


@pytest.mark.spec("RFC 6749 §3.2")
def test_token_endpoint_is_post_only(client, db):
    assert client.get("/oauth2/token", {"grant_type": "client_credentials"}).status_code == 405


@pytest.mark.spec("RFC 6749 §3.1")
@pytest.mark.parametrize("duplicate", ["client_id", "redirect_uri", "grant_type"])
def test_duplicate_parameters(client, flow, duplicate):
    code = obtain_code(flow)
    data = [("grant_type", "authorization_code"), ("code", code), ("client_id", flow.app.client_id),
            ("redirect_uri", REDIRECT_URI), ("code_verifier", flow.verifier)]
    data.append((duplicate, dict(data)[duplicate]))
    response = client.post("/oauth2/token", urlencode(data), content_type="application/x-www-form-urlencoded")
    assert_oauth_error(response, "invalid_request")
    assert flow.token(code).status_code == 200


@pytest.mark.spec("RFC 6749 §5.1")
def test_success_is_not_cacheable(flow):
    response = flow.token(obtain_code(flow))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert_no_store(response)


@pytest.mark.spec("RFC 6749 §4.1.3")
def test_missing_code(client, public_client):
    response = post_form(client, "/oauth2/token", {"grant_type": "authorization_code",
                                                   "client_id": public_client.client_id})
    assert_oauth_error(response, "invalid_request")
    assert_no_store(response)


@pytest.mark.spec("RFC 6749 §5.2")
@pytest.mark.parametrize("code", ["garbage", "x" * 600])
def test_unknown_code(flow, code):
    assert_oauth_error(flow.token(code), "invalid_grant", description="Invalid code")


# --- the code: single use, expiry, bound to client and redirect_uri --------------------------

@pytest.mark.spec("RFC 6749 §4.1.2")
@pytest.mark.spec("RFC 9700 §4.2.4")
def test_code_replay_revokes_the_first_redemption(client, flow):
    code = obtain_code(flow, scope="openid offline_access")
    first = flow.token(code)
    assert first.status_code == 200, first.content
    tokens = first.json()
    assert userinfo_status(client, tokens["access_token"]) == 200

    replay = flow.token(code)
    assert_oauth_error(replay, "invalid_grant", description="Token already granted")
    assert_no_store(replay)

    login = login_of(tokens["access_token"])
    assert login.revoked_at is not None
    assert login.revoked_reason == "authorization_code_replay"
    assert userinfo_status(client, tokens["access_token"]) == 401
    refresh = post_form(client, "/oauth2/token", {"grant_type": "refresh_token", "client_id": flow.app.client_id,
                                                  "refresh_token": tokens["refresh_token"]})
    assert_oauth_error(refresh, "invalid_grant")


@pytest.mark.spec("RFC 6749 §4.1.2")
def test_expired_code(flow):
    code = obtain_code(flow)
    Login.objects.update(code_expires_at=timezone.now() - timedelta(seconds=1))
    assert_oauth_error(flow.token(code), "invalid_grant", description="Code expired")


@pytest.mark.spec("RFC 6749 §4.1.2")
def test_code_expires_after_the_configured_lifetime(flow, monkeypatch):
    code = obtain_code(flow)
    later = timezone.now() + timedelta(seconds=auth_settings.AUTHORIZATION_CODE_LIFETIME + 1)
    monkeypatch.setattr("medplum_auth.oauth2_validators.timezone.now", lambda: later)
    assert_oauth_error(flow.token(code), "invalid_grant", description="Code expired")


@pytest.mark.spec("RFC 6749 §4.1.3")
def test_code_is_bound_to_its_client(client, oauth_project, flow):
    other = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=REDIRECT_URI)
    code = obtain_code(flow)
    assert_oauth_error(flow.token(code, client_id=other.client_id), "invalid_grant")
    assert flow.token(code).status_code == 200  # the attempt did not spend it


@pytest.mark.spec("RFC 6749 §4.1.3")
def test_code_is_bound_to_its_client_confidential(client, oauth_project, flow):
    other = ClientApplicationFactory(project=oauth_project, redirect_uris=REDIRECT_URI)
    code = obtain_code(flow)
    response = flow.token(code, client_id=other.client_id, client_secret=other.plaintext_secret)
    assert_oauth_error(response, "invalid_grant")


@pytest.mark.spec("RFC 6749 §4.1.3")
@pytest.mark.spec("RFC 6749 §5.2")
@pytest.mark.parametrize("redirect_uri", [OTHER_REDIRECT_URI, "https://evil.example.org/callback",
                                          REDIRECT_URI + "/", REDIRECT_URI.upper()])
def test_code_is_bound_to_its_redirect_uri(oauth_project, client, patient, redirect_uri):
    app = ClientApplicationFactory(project=oauth_project, public=True,
                                   redirect_uris=f"{REDIRECT_URI}\n{OTHER_REDIRECT_URI}")
    flow = Flow(client, app)
    code = obtain_code(flow)
    assert_oauth_error(flow.token(code, redirect_uri=redirect_uri), "invalid_grant")
    assert flow.token(code).status_code == 200


@pytest.mark.spec("OAuth 2.1 §4.1.3")
@pytest.mark.parametrize("redirect_uri", [None, ""], ids=["omitted", "empty (@medplum/core in Node)"])
def test_redirect_uri_may_be_omitted_with_pkce(flow, redirect_uri):
    response = flow.token(obtain_code(flow), redirect_uri=redirect_uri)
    assert response.status_code == 200, response.content


@pytest.mark.spec("RFC 6749 §4.1.3")
@pytest.mark.parametrize("redirect_uri", [None, ""], ids=["omitted", "empty"])
def test_redirect_uri_is_required_without_pkce(client, patient, pkce_optional_client, redirect_uri):
    flow = Flow(client, pkce_optional_client)
    code = obtain_code(flow, code_challenge=None, code_challenge_method=None)
    response = flow.token(code, redirect_uri=redirect_uri, code_verifier=None,
                          client_secret=pkce_optional_client.plaintext_secret)
    assert_oauth_error(response, "invalid_grant")
    ok = flow.token(code, code_verifier=None, client_secret=pkce_optional_client.plaintext_secret)
    assert ok.status_code == 200, ok.content


# --- PKCE ------------------------------------------------------------------------------------

@pytest.mark.spec("RFC 7636 §4.6")
def test_wrong_code_verifier(flow):
    code = obtain_code(flow)
    assert_oauth_error(flow.token(code, code_verifier=flow.challenge), "invalid_grant",  # plain-style
                       description="Invalid code_verifier")
    login = Login.objects.get(code_digest=token_digest(code))
    assert login.revoked_at is not None and login.revoked_reason == "code_verifier_mismatch"


@pytest.mark.spec("RFC 7636 §4.6")
def test_wrong_code_verifier_burns_the_code(flow):
    """Issue 15 (6): a stolen code cannot be retried against guessed verifiers."""
    code = obtain_code(flow)
    assert_oauth_error(flow.token(code, code_verifier="w" * 64), "invalid_grant")
    response = flow.token(code)  # the right verifier, too late
    assert_oauth_error(response, "invalid_grant")
    assert "access_token" not in response.json()
    login = Login.objects.get(code_digest=token_digest(code))
    assert login.revoked_reason == "code_verifier_mismatch" and login.granted_at is None


@pytest.mark.spec("RFC 7636 §4.5")
def test_missing_code_verifier(flow):
    code = obtain_code(flow)
    assert_oauth_error(flow.token(code, code_verifier=None), "invalid_request")


@pytest.mark.spec("RFC 9700 §4.8.2")
def test_code_verifier_without_challenge_is_refused(client, patient, pkce_optional_client):
    """PKCE downgrade: a verifier is accepted only if the authorization request had a challenge."""
    flow = Flow(client, pkce_optional_client)
    code = obtain_code(flow, code_challenge=None, code_challenge_method=None)
    response = flow.token(code, client_secret=pkce_optional_client.plaintext_secret)
    assert_oauth_error(response, "invalid_grant")
    ok = flow.token(code, code_verifier=None, client_secret=pkce_optional_client.plaintext_secret)
    assert ok.status_code == 200, ok.content


@pytest.mark.spec("RFC 9700 §2.1.1")
def test_pkce_optional_client_without_pkce_still_needs_its_secret(client, patient, pkce_optional_client):
    flow = Flow(client, pkce_optional_client)
    code = obtain_code(flow, code_challenge=None, code_challenge_method=None)
    assert_oauth_error(flow.token(code, code_verifier=None), "invalid_client", status=401)
    assert flow.token(code, code_verifier=None, client_secret=pkce_optional_client.plaintext_secret).status_code == 200


@pytest.mark.spec("RFC 9700 §2.1.1")
def test_pkce_required_client_cannot_skip_it_at_the_token_endpoint(client, patient, confidential_flow,
                                                                  confidential_client):
    """A secret does not replace PKCE: the code carries the challenge, so the verifier is checked."""
    code = obtain_code(confidential_flow)
    response = confidential_flow.token(code, code_verifier=None, client_secret=confidential_client.plaintext_secret)
    assert_oauth_error(response, "invalid_request")


# --- client authentication by client type ----------------------------------------------------

@pytest.mark.spec("RFC 6749 §3.2.1")
def test_confidential_client_needs_its_secret_even_with_pkce(confidential_flow, confidential_client):
    code = obtain_code(confidential_flow)
    response = confidential_flow.token(code)
    assert_oauth_error(response, "invalid_client", status=401)
    assert response["WWW-Authenticate"].startswith("Basic ")
    assert_no_store(response)
    wrong = confidential_flow.token(code, client_secret="0" * 64)
    assert_oauth_error(wrong, "invalid_client", status=401)
    ok = confidential_flow.token(code, client_secret=confidential_client.plaintext_secret)
    assert ok.status_code == 200, ok.content


@pytest.mark.spec("RFC 6749 §2.3.1")
def test_confidential_client_with_basic_auth(client, confidential_flow, confidential_client):
    code = obtain_code(confidential_flow)
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "code_verifier": confidential_flow.verifier}
    auth = basic_auth(confidential_client.client_id, confidential_client.plaintext_secret)
    response = post_form(client, "/oauth2/token", data, HTTP_AUTHORIZATION=auth)
    assert response.status_code == 200, response.content
    claims = verify_jwt(client, response.json()["access_token"])[1]
    assert claims["client_id"] == confidential_client.client_id


@pytest.mark.spec("RFC 6749 §3.2.1")
def test_public_client_needs_no_secret_and_cannot_send_one(flow):
    code = obtain_code(flow)
    assert_oauth_error(flow.token(code, client_secret="made-up"), "invalid_client", status=401)
    response = flow.token(code)
    assert response.status_code == 200, response.content


@pytest.mark.spec("RFC 6749 §3.2.1")
def test_unknown_client(flow):
    code = obtain_code(flow)
    assert_oauth_error(flow.token(code, client_id="no-such-client"), "invalid_client", status=401)


# --- the token response ----------------------------------------------------------------------

@pytest.mark.spec("RFC 6749 §5.1")
@pytest.mark.spec("OIDC Core §3.1.3.3")
def test_token_response_for_a_patient(client, flow, patient, oauth_project):
    response = flow.token(obtain_code(flow))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == auth_settings.ACCESS_TOKEN_LIFETIME
    assert body["scope"] == "openid"
    assert body["access_token"] and body["id_token"]
    assert "refresh_token" not in body
    assert body["project"] == {"reference": f"Project/{oauth_project.pk}", "display": "Clinic"}
    assert body["profile"]["reference"] == f"Patient/{patient.profile_id}"
    assert body["patient"] == patient.profile_id
    assert body["need_patient_banner"] is True
    login = login_of(body["access_token"])
    assert login.granted_at is not None and login.code_redeemed_at is not None
    assert login.membership == patient and login.client == flow.app


def test_token_response_for_a_practitioner(client, oauth_project, public_client):
    user = UserFactory(email="doc@example.org", username="doc@example.org")
    doctor = MembershipFactory(project=oauth_project, user=user, profile_type="Practitioner")
    body = obtain_tokens(Flow(client, public_client), email="doc@example.org")
    assert body["profile"]["reference"] == f"Practitioner/{doctor.profile_id}"
    assert "patient" not in body
    assert "need_patient_banner" not in body


@pytest.mark.spec("OIDC Core §11")
@pytest.mark.parametrize("scope, always, expected", [
    ("openid", False, False),
    ("openid offline_access", False, True),
    ("openid offline", False, True),
    ("openid", True, True),
])
def test_refresh_token_only_when_offline_or_client_always(client, oauth_project, patient, scope, always, expected):
    app = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=REDIRECT_URI,
                                   always_issue_refresh_token=always)
    body = obtain_tokens(Flow(client, app), scope=scope)
    assert ("refresh_token" in body) is expected
    login = login_of(body["access_token"])
    assert (login.refresh_digest is not None) is expected


@pytest.mark.spec("RFC 6749 §5.1")
def test_no_id_token_without_openid(client, flow):
    body = obtain_tokens(flow, scope="patient/Observation.rs", nonce=None)
    assert "id_token" not in body
    assert body["scope"] == "patient/Observation.rs"


@pytest.mark.spec("RFC 9068 §2.1")
@pytest.mark.spec("RFC 9068 §2.2")
def test_access_token_is_an_rfc9068_jwt_with_medplum_claims(client, flow, patient, issuer):
    body = obtain_tokens(flow, scope="openid profile")
    header, claims = verify_jwt(client, body["access_token"])
    assert header["typ"] == "at+jwt"
    assert header["kid"]
    user_id = str(patient.user_id)
    login = login_of(body["access_token"])
    assert claims["iss"] == issuer
    assert claims["aud"] == issuer
    assert claims["sub"] == user_id
    assert claims["username"] == user_id
    assert claims["client_id"] == flow.app.client_id
    assert claims["login_id"] == str(login.pk)
    assert claims["scope"] == "openid profile"
    assert claims["profile"] == f"Patient/{patient.profile_id}"
    assert claims["jti"]
    now = time.time()
    assert now - 60 <= claims["iat"] <= now + 1
    assert claims["exp"] - claims["iat"] == body["expires_in"] == auth_settings.ACCESS_TOKEN_LIFETIME


def test_access_token_jti_is_unique(client, flow):
    first = obtain_tokens(flow)
    second = obtain_tokens(flow)
    assert verify_jwt(client, first["access_token"])[1]["jti"] != verify_jwt(client, second["access_token"])[1]["jti"]


@pytest.mark.spec("OIDC Core §2")
@pytest.mark.spec("OIDC Core §3.1.3.6")
def test_id_token_claims(client, flow, patient, issuer):
    body = obtain_tokens(flow, nonce="n-0S6_WzA2Mj")
    header, claims = verify_jwt(client, body["id_token"])
    assert header["typ"] == "JWT"
    assert header["kid"]
    assert claims["iss"] == issuer
    assert claims["aud"] == flow.app.client_id
    assert claims["sub"] == str(patient.user_id)
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["at_hash"] == token_hash(body["access_token"])
    login = login_of(body["access_token"])
    assert claims["auth_time"] == int(login.auth_time.timestamp())
    assert claims["auth_time"] <= claims["iat"]
    assert claims["exp"] - claims["iat"] == auth_settings.ID_TOKEN_LIFETIME
    assert claims["fhirUser"] == f"{auth_settings.fhir_base_url}/Patient/{patient.profile_id}"


@pytest.mark.spec("OIDC Core §3.1.2.1")
def test_id_token_without_nonce_has_none(client, flow):
    body = obtain_tokens(flow, nonce=None)
    assert "nonce" not in verify_jwt(client, body["id_token"])[1]


@pytest.mark.spec("OIDC Core §5.4")
def test_id_token_standard_claims_by_scope(client, flow, patient):
    body = obtain_tokens(flow, scope="openid profile email")
    claims = verify_jwt(client, body["id_token"])[1]
    user = patient.user
    assert claims["given_name"] == user.first_name
    assert claims["family_name"] == user.last_name
    assert claims["email"] == "pat@example.org"


def test_client_access_token_lifetime_is_respected(client, oauth_project, patient):
    app = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=REDIRECT_URI,
                                   access_token_lifetime=120)
    body = obtain_tokens(Flow(client, app))
    assert body["expires_in"] == 120
    claims = verify_jwt(client, body["access_token"])[1]
    assert claims["exp"] - claims["iat"] == 120


@pytest.mark.spec("RFC 6749 §4.1.3")
def test_inactive_membership_cannot_redeem(flow, patient):
    code = obtain_code(flow)
    patient.active = False
    patient.save()
    assert_oauth_error(flow.token(code), "invalid_grant")


@pytest.mark.spec("RFC 6749 §5.2")
def test_disabled_client_cannot_redeem(flow, public_client):
    code = obtain_code(flow)
    public_client.status = "off"
    public_client.save()
    assert_oauth_error(flow.token(code), "invalid_client", status=401)


def test_code_exchange_reads_and_updates_the_login_once(flow):
    """The code's login is read (locked) once and written once: the code is spent in the same
    UPDATE that records the issue, and a replay still finds it spent."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.oauth.conftest import access_token_claims

    code = obtain_code(flow)
    with CaptureQueriesContext(connection) as captured:
        response = flow.token(code)
    assert response.status_code == 200, response.content
    login_sql = [q["sql"] for q in captured.captured_queries if '"medplum_auth_login"' in q["sql"]]
    assert [sql.split()[0] for sql in login_sql] == ["SELECT", "UPDATE"], login_sql
    assert ("FOR UPDATE" in login_sql[0]) is connection.features.has_select_for_update
    login = Login.objects.get(pk=access_token_claims(response.json()["access_token"])["login_id"])
    assert login.code_redeemed_at is not None and login.granted_at is not None

    replay = flow.token(code)
    assert_oauth_error(replay, "invalid_grant", description="Token already granted")
    login.refresh_from_db()
    assert login.revoked_at is not None and login.revoked_reason == "authorization_code_replay"
