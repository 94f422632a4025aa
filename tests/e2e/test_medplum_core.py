"""@medplum/core 5.2.13 ``MedplumClient`` against the live server (drop-in Medplum compatibility)."""

from __future__ import annotations

import pytest

from fhir_api.models import Resource
from fhir_api.repository import Repository
from medplum_auth import services
from medplum_auth.models import Login

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

ACCESS_TOKEN_LIFETIME = 12  # seconds: short, so an ordinary API call soon has to refresh first


@pytest.mark.spec("Medplum headless recipe: processCode → /auth/me; refreshGracePeriod refresh; signOut")
def test_medplum_core_redirect_login_refresh_and_sign_out(seed, run_node):
    data = seed(access_token_lifetime=ACCESS_TOKEN_LIFETIME)
    out = run_node("medplum-redirect.mjs", data, E2E_ACCESS_TOKEN_LIFETIME=str(ACCESS_TOKEN_LIFETIME))
    membership = data.membership

    # processCode resolved to the Patient profile from /auth/me (so the token response carried
    # project and profile, and the JWT login_id, client_id and exp that the client reads).
    assert out["profile"]["resourceType"] == "Patient"
    assert out["profile"]["id"] == membership.profile_id
    assert out["get_profile"] == out["profile"]
    assert out["login"]["profile"]["reference"] == f"Patient/{membership.profile_id}"
    assert out["login"]["project"]["reference"] == f"Project/{data.project.pk}"
    assert out["access_token_claims"]["client_id"] == data.client.client_id
    claims = out["access_token_claims"]
    assert claims["exp"] - claims["iat"] == ACCESS_TOKEN_LIFETIME  # the client's own lifetime applies
    assert out["browser_steps"][0] == "signin" and "consent" in out["browser_steps"]
    # The code exchange sent the verifier from storage (an S256 request without it would fail).
    token_calls = [c for c in out["calls"] if c["path"] == "/oauth2/token"]
    assert token_calls[0] == {"method": "POST", "path": "/oauth2/token", "status": 200,
                              "grant_type": "authorization_code"}

    # The API call made inside the grace period refreshed first, on its own, exactly once.
    refresh = out["refresh"]
    assert refresh["access_token_changed"] and refresh["refresh_token_changed"] and refresh["new_exp_later"]
    grants = [c.get("grant_type") for c in refresh["calls"] if c["path"] == "/oauth2/token"]
    assert grants == ["refresh_token"], refresh["calls"]
    assert refresh["me_profile_id"] == membership.profile_id
    assert len(token_calls) == 2, "the client must not loop refreshing"

    # signOut() posted to /oauth2/logout with the Bearer token (200) and revoked the login.
    sign_out = out["sign_out"]
    assert [(c["method"], c["path"], c["status"]) for c in sign_out["calls"]] == [("POST", "/oauth2/logout", 200)]
    assert sign_out["active_login"] is None
    assert sign_out["me_with_old_token"]["status"] == 401
    assert sign_out["me_with_old_token"]["wwwAuthenticate"].startswith("Bearer")
    assert sign_out["userinfo_with_old_token"]["status"] == 401
    assert sign_out["refresh_with_current_token"]["status"] == 400
    assert sign_out["refresh_with_current_token"]["body"]["error"] == "invalid_grant"
    assert sign_out["refresh_with_rotated_out_token"]["body"]["error"] == "invalid_grant"


@pytest.mark.spec("Medplum embedded login: startLogin → /auth/login {login, code} → processCode")
def test_medplum_core_embedded_login(seed, run_node):
    data = seed()
    out = run_node("medplum-embedded.mjs", data)
    membership = data.membership

    # A wrong password reaches the caller as Medplum's OperationOutcome, with its message.
    wrong = out["wrong_password"]
    assert wrong["name"] == "OperationOutcomeError"
    assert wrong["outcome"]["resourceType"] == "OperationOutcome"
    assert "password" in wrong["message"].lower()

    assert out["login_response_keys"] == ["code", "login"]
    assert out["profile"]["resourceType"] == "Patient" and out["profile"]["id"] == membership.profile_id
    assert out["login"]["has_refresh_token"]
    assert out["login"]["profile"]["reference"] == f"Patient/{membership.profile_id}"
    assert out["me"]["profile"]["id"] == membership.profile_id
    assert out["me"]["project"]["id"] == str(data.project.pk)
    assert out["me"]["user"]["email"] == data.email

    # patchResource: a JSON Patch on the signed-in Patient's own profile, a new version; a failing
    # `test` operation reaches the caller as an OperationOutcomeError and changes nothing.
    assert out["patched"] == {"version": "2", "gender": "unknown"}
    assert out["failed_patch"]["name"] == "OperationOutcomeError"
    assert "cannot be applied" in out["failed_patch"]["message"]
    assert out["reread"] == {"version": "2", "gender": "unknown"}
    # createResourceIfNoneExist: created once (201), then found (200), the same resource.
    conditional = out["conditional_create"]
    assert conditional["first_id"] and conditional["first_id"] == conditional["second_id"]
    posts = [c["status"] for c in out["calls"] if c["method"] == "POST" and c["path"] == "/fhir/R4/Observation"]
    assert posts == [201, 200]

    # After signOut() the client has no login and the server refuses the old token.
    assert out["after_sign_out"] == {"name": "OperationOutcomeError", "message": "Unauthorized"}
    assert out["old_token_after_sign_out"]["status"] == 401
    paths = [(c["method"], c["path"]) for c in out["calls"]]
    assert ("POST", "/auth/login") in paths and ("POST", "/oauth2/logout") in paths
    patch_calls = [c["status"] for c in out["calls"] if c["method"] == "PATCH"]
    assert patch_calls == [200, 422]
    assert all(c["path"] == f"/fhir/R4/Patient/{membership.profile_id}" for c in out["calls"] if c["method"] == "PATCH")


@pytest.mark.spec("Medplum embedded login with MFA: startLogin → mfaRequired → auth/mfa/verify → processCode")
def test_medplum_core_login_with_an_authenticator_app(seed, run_node):
    import pyotp

    from medplum_auth import mfa
    from medplum_auth.models import Login

    data = seed()
    user = data.membership.user
    secret = mfa.start_totp(user).secret
    mfa.confirm_totp(user, pyotp.TOTP(secret).now())
    out = run_node("medplum-mfa.mjs", data, E2E_TOTP_SECRET=secret)
    assert out["login_response"] == {"login": out["login_response"]["login"], "mfaRequired": True,
                                     "mfaMethods": ["totp"]}
    assert out["wrong_code"] == {"name": "OperationOutcomeError", "message": "Invalid token (token)"}
    assert out["verified_keys"] == ["code", "login"]
    assert out["profile"] == {"resourceType": "Patient", "id": data.membership.profile_id}
    assert out["access_token_login_id"] == out["login_response"]["login"]
    login = Login.objects.get(pk=out["login_response"]["login"])
    assert login.amr == "pwd otp mfa" and login.granted_at is not None and not login.awaiting_mfa
    assert [(c["method"], c["path"], c["status"]) for c in out["calls"]][:3] == [
        ("POST", "/auth/login", 200), ("POST", "/auth/mfa/verify", 400), ("POST", "/auth/mfa/verify", 200)]


@pytest.mark.spec("Medplum client credentials: startClientLogin; refreshGracePeriod (300 s) < token lifetime")
def test_medplum_core_client_credentials_login_and_reads_do_not_loop(seed, run_node, live_gunicorn):
    """With the SDK's defaults a backend logs in once and reads twice on one token.

    @medplum/core re-runs the grant whenever exp is within its refreshGracePeriod (300 s): with
    300 s client_credentials tokens every call, startClientLogin() included, fetched a new token,
    ~140 token requests a second, forever.
    """
    data = seed()
    backend, secret = services.create_client(data.project, "E2E backend", public=False)
    patient_id = data.membership.profile_id
    Repository(data.project.pk, None).read("Patient", patient_id)  # the invite created the profile
    before = live_gunicorn.requests_seen("POST", "/oauth2/token")
    out = run_node("medplum-client-credentials.mjs", data, E2E_CLIENT_ID=backend.client_id,
                   E2E_CLIENT_SECRET=secret, E2E_PATIENT_ID=patient_id)
    token_requests = live_gunicorn.requests_seen("POST", "/oauth2/token") - before

    assert token_requests <= 2, f"the server saw {token_requests} token requests"
    assert Login.objects.filter(client=backend).count() == token_requests
    assert [c.get("grant_type") for c in out["calls"] if c["path"] == "/oauth2/token"] == ["client_credentials"]
    claims = out["access_token_claims"]
    assert claims["client_id"] == backend.client_id
    assert claims["exp"] - claims["iat"] > 300  # above the SDK's refreshGracePeriod
    assert out["reads"] == [patient_id, patient_id] and out["same_token_after_reads"]
    # getProfile() after startClientLogin(): the ClientApplication, as Medplum answers /auth/me.
    assert out["profile"] == {"resourceType": "ClientApplication", "id": backend.client_id, "name": "E2E backend"}
    reads = [(c["method"], c["path"], c["status"]) for c in out["calls"] if c["path"].startswith("/fhir/")]
    assert reads == [("GET", f"/fhir/R4/Patient/{patient_id}", 200)] * 2


@pytest.mark.spec("FHIR R4 http.html#transaction; Medplum autoBatch, upsertResource, validateResource, $everything")
def test_medplum_core_bundles_conditional_update_validate_and_everything(seed, run_node):
    data = seed()
    patient_id = data.membership.profile_id
    practitioner = services.invite_member(data.project, "e2e.doctor@example.org", profile_type="Practitioner",
                                          first_name="Dana", last_name="Doc", password=data.password).membership
    repo = Repository(data.project.pk, None)
    own_obs = repo.create("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "bp"},
                                          "subject": {"reference": f"Patient/{patient_id}"}}).resource_id
    out = run_node("medplum-bundles.mjs", data, E2E_PATIENT_ID=patient_id,
                   E2E_PRACTITIONER_EMAIL="e2e.doctor@example.org", E2E_PRACTITIONER_PASSWORD=data.password)
    assert practitioner.profile_type == "Practitioner"

    obs_entry, patient_entry = out["transaction"]["entries"]
    assert out["transaction"]["type"] == "transaction-response"
    assert [obs_entry["status"], patient_entry["status"]] == ["201", "201"]
    assert obs_entry["subject"] == f"Patient/{patient_entry['id']}"
    assert patient_entry["location"].endswith(f"/Patient/{patient_entry['id']}/_history/1")
    created, linked, read, search, missing = out["batch"]["entries"]
    assert out["batch"]["type"] == "batch-response"
    assert created["status"] == "201" and linked["status"] == "201" and linked["subject"] == f"Patient/{created['id']}"
    assert read == {**read, "status": "200", "resourceType": "Patient", "id": patient_id, "etag": 'W/"1"'}
    assert search["resourceType"] == "Bundle" and missing["status"] == "404" and missing["outcome"] == "not-found"

    upsert = out["upsert"]
    assert upsert["first"]["id"] == upsert["second"]["id"]
    versions = (upsert["first"]["version"], upsert["second"]["version"], upsert["second"]["status"])
    assert versions == ("1", "2", "amended")
    puts = [c["status"] for c in out["calls"] if c["method"] == "PUT" and c["path"] == "/fhir/R4/Observation"]
    assert puts == [201, 200]

    assert out["validate"]["valid"]["id"] == "allok"
    assert out["validate"]["invalid"]["name"] == "OperationOutcomeError"
    assert "birthDate" in out["validate"]["invalid"]["message"]

    auto = out["auto"]
    assert auto["patient"] == patient_id and auto["observation"] == upsert["first"]["id"]
    assert set(auto["search"]) == {own_obs, upsert["first"]["id"]}
    assert auto["missing"]["name"] == "OperationOutcomeError" and auto["missing"]["status"] == "not-found"
    assert auto["calls"] == ["POST /fhir/R4 200"]  # four GETs, one batch request

    mine = {f"Patient/{patient_id}", f"Observation/{own_obs}", f"Observation/{upsert['first']['id']}"}
    assert set(out["everything"]["refs"]) == mine and out["everything"]["total"] == 3
    patient = out["patient"]
    assert set(patient["own"]["refs"]) == mine and patient["own"]["total"] == 3
    assert patient["other"]["name"] == "OperationOutcomeError" and patient["other"]["status"] == "not-found"
    other_read, own_search = patient["batch"]["entries"]
    assert other_read["status"] == "404" and other_read["id"] is None
    assert set(patient["batch_search_subjects"]) == {f"Patient/{patient_id}"}


@pytest.mark.spec("Issue 18: every R4 type (create, read, search, delete) and createBinary + download()")
def test_medplum_core_r4_types_and_binary(seed, run_node):
    data = seed()
    backend, secret = services.create_client(data.project, "E2E backend", public=False)
    patient_id = data.membership.profile_id
    out = run_node("medplum-r4-types.mjs", data, E2E_CLIENT_ID=backend.client_id, E2E_CLIENT_SECRET=secret,
                   E2E_PATIENT_ID=patient_id)
    types = out["types"]
    assert len(types) >= 10
    for resource_type, result in types.items():
        assert result["read_id"] == result["id"] and result["version"] == "1", resource_type
        assert result["found"] == [result["id"]], (resource_type, result)
        assert result["after_delete"] == "deleted", (resource_type, result)
        row = Resource.objects.get(project=data.project, resource_type=resource_type, resource_id=result["id"])
        assert row.deleted and row.version_id == 2
        in_compartment = resource_type not in ("Questionnaire", "PractitionerRole", "Location")
        assert row.patient == (f"Patient/{patient_id}" if in_compartment else ""), resource_type

    binary = out["binary"]
    assert binary["resourceType"] == "Binary" and binary["contentType"] == "application/pdf"
    assert binary["securityContext"] == {"reference": f"Patient/{patient_id}"}
    assert binary["url"].endswith(f"/fhir/R4/Binary/{binary['id']}")
    assert binary["same_bytes"] and binary["size"] == 2048 and binary["blob_type"] == "application/pdf"
    stored = Resource.objects.get(project=data.project, resource_type="Binary", resource_id=binary["id"])
    assert stored.patient == f"Patient/{patient_id}" and "data" not in stored.content
    assert out["attachment"]["contentType"] == "text/plain" and out["attachment"]["text"] == "plain text"
    assert out["attachment"]["url"].startswith(binary["url"].rsplit("/", 1)[0] + "/")
    assert [(c["method"], c["status"]) for c in out["binary_calls"]] == [
        ("POST", 201), ("GET", 200), ("POST", 201), ("GET", 200)]
