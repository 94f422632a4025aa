"""fhirclient 2.6.3 (SMART client-js, npm) in Node mode: a standalone patient launch end to end.

The seeded Patient (``services.invite_member``; fhir_api's ``member_invited`` receiver stores the
Patient resource) has Observations, and so does another patient of the same project. The app in
``e2e/fhirclient.mjs`` launches with ``iss`` = our FHIR base, Chromium signs the Patient in and
allows the consent, and the client reads, searches and refreshes through our API.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SCOPE = "launch/patient openid fhirUser offline_access patient/*.rs"


def _observation(patient: str, code: str) -> dict[str, object]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "subject": {"reference": patient}}


@pytest.mark.spec("SMART App Launch 2.2 standalone launch: launch/patient, PKCE S256, aud, patient context, refresh")
def test_fhirclient_standalone_patient_launch(seed, run_node, live_gunicorn):
    from fhir_api.models import Resource
    from fhir_api.repository import Repository

    data = seed()
    project, membership = data.project, data.membership
    own_id = membership.profile_id
    # The invite created the Patient resource (so fhirUser and the patient context resolve).
    assert Resource.objects.filter(project=project, resource_type="Patient", resource_id=own_id).exists()
    repo = Repository(project.pk, None)
    other_id = repo.create("Patient", {"resourceType": "Patient", "name": [{"family": "Other"}]}).resource_id
    own_obs = {f"Observation/{repo.create('Observation', _observation(f'Patient/{own_id}', c)).resource_id}"
               for c in ("8867-4", "9279-1", "8310-5")}
    other_obs = [repo.create("Observation", _observation(f"Patient/{other_id}", c)).resource_id
                 for c in ("8867-4", "2708-6")]

    out = run_node("fhirclient.mjs", data, E2E_SCOPE=SCOPE, E2E_OTHER_PATIENT=other_id,
                   E2E_OTHER_OBSERVATION=other_obs[0])
    issuer = live_gunicorn.url
    fhir_base = f"{issuer}/fhir/R4"
    own, other = f"Patient/{own_id}", f"Patient/{other_id}"
    other_refs = {other, *(f"Observation/{i}" for i in other_obs)}

    # authorize(): discovery through <FHIR base>/.well-known/smart-configuration, then a
    # redirect to our authorization endpoint with PKCE S256, aud = FHIR base, the scopes asked.
    discovery = out["calls_at_ready"][0]
    assert (discovery["method"], discovery["path"], discovery["status"]) == (
        "GET", "/fhir/R4/.well-known/smart-configuration", 200)
    assert out["authorize"]["origin_path"] == f"{issuer}/oauth2/authorize"
    params = out["authorize"]["params"]
    assert params["aud"] == fhir_base
    assert params["code_challenge_method"] == "S256" and out["authorize"]["has_code_challenge"]
    assert params["scope"] == SCOPE and params["response_type"] == "code"
    assert params["client_id"] == data.client.client_id
    # The app's real loopback callback (any port: RFC 8252 §7.3) received the code.
    assert params["redirect_uri"] == f"{out['app_url']}/callback" == out["state"]["redirect_uri"]
    assert urlsplit(params["redirect_uri"]).port != urlsplit("http://127.0.0.1:8976").port
    assert out["state"] == {"server_url": fhir_base, "authorize_uri": f"{issuer}/oauth2/authorize",
                            "token_uri": f"{issuer}/oauth2/token", "redirect_uri": params["redirect_uri"]}
    assert out["browser_steps"][0] == "signin" and "consent" in out["browser_steps"]

    # ready(): the code exchange sent the verifier and the public client's id.
    exchange = [c for c in out["calls_at_ready"] if c["path"] == "/oauth2/token"]
    assert len(exchange) == 1, out["calls_at_ready"]
    exchange = exchange[0]
    assert exchange["status"] == 200 and exchange["grant_type"] == "authorization_code"
    assert exchange["has_code"] and exchange["has_code_verifier"]
    assert exchange["client_id"] == data.client.client_id
    assert exchange["redirect_uri"] == params["redirect_uri"]

    # The token response: patient context, banner, scopes granted, id and refresh tokens.
    token = out["token_response"]
    assert token["patient"] == own_id == out["client_patient_id"]
    assert token["need_patient_banner"] is True
    assert token["token_type"].lower() == "bearer"
    assert set(SCOPE.split()) <= set(token["scope"].split())
    assert {"access_token", "id_token", "refresh_token", "expires_in"} <= set(token["keys"])
    claims = token["id_token_claims"]
    assert claims["aud"] == data.client.client_id and claims["iss"] == issuer
    assert out["fhir_user"] == own and out["user_type"] == "Patient"

    # Reads through our API: the patient, its fhirUser profile, its Observations, nothing else.
    assert out["patient"] == out["patient_read"] == out["user"] == {"resourceType": "Patient", "id": own_id}
    for name in ("by_patient", "via_patient_request", "everything"):
        assert set(out[name]["refs"]) == own_obs and out[name]["total"] == 3, (name, out[name])
    assert set(out["all_pages"]) == own_obs and len(out["all_pages"]) == 3  # followed `next` links
    assert out["with_include"] == {"total": 3, "match": out["with_include"]["match"], "include": [own]}
    assert set(out["with_include"]["match"]) == own_obs
    assert out["other_by_subject"] == {"total": 0, "refs": []}
    assert out["other_patient_read"] == {"ok": False, "status": 404}
    assert out["other_observation_read"] == {"ok": False, "status": 404}
    assert out["patient_search"] == {"total": 1, "refs": [own]}
    seen = {ref for name in ("by_patient", "via_patient_request", "everything", "patient_search", "other_by_subject")
            for ref in out[name]["refs"]} | set(out["all_pages"]) | set(out["with_include"]["include"])
    assert not seen & other_refs
    fhir_calls = [c for c in out["calls"] if c["path"].startswith("/fhir/R4/") and ".well-known" not in c["path"]
                  and not c["path"].endswith("/metadata")]
    assert fhir_calls and all(c["authorization"] == "Bearer" for c in fhir_calls)

    # refresh(): a refresh_token grant WITHOUT client_id (client-js's default for a public app;
    # RFC 6749 §6 and SMART 2.2 do not require it); new tokens; the next read uses them.
    refresh = out["refresh"]
    assert [(c["path"], c["grant_type"], c["status"]) for c in refresh["calls"]] == [
        ("/oauth2/token", "refresh_token", 200)]
    assert "client_id" not in refresh["calls"][0] and refresh["calls"][0]["authorization"] is None
    assert refresh["calls"][0]["response"]["patient"] == own_id
    assert refresh["access_token_changed"] and refresh["refresh_token_changed"]
    assert refresh["patient_after"] == own_id
    assert refresh["read_after"] == {"resourceType": "Patient", "id": own_id}
    assert refresh["read_after_used_new_token"]


@pytest.mark.spec("Issue 18: fhirpy 2.3.1 (Python FHIR client) CRUD and search on types served from the R4 data")
def test_fhirpy_crud_on_r4_types(seed, live_gunicorn):
    import base64
    import json
    import urllib.parse
    import urllib.request

    from fhirpy import SyncFHIRClient
    from fhirpy.base.exceptions import ResourceNotFound

    from fhir_api.models import Resource
    from medplum_auth import services

    data = seed()
    backend, secret = services.create_client(data.project, "fhirpy backend", public=False)
    basic = base64.b64encode(f"{backend.client_id}:{secret}".encode()).decode()
    request = urllib.request.Request(f"{live_gunicorn.url}/oauth2/token", method="POST",
                                     data=urllib.parse.urlencode({"grant_type": "client_credentials"}).encode(),
                                     headers={"Authorization": f"Basic {basic}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        token = json.load(response)["access_token"]
    client = SyncFHIRClient(f"{live_gunicorn.url}/fhir/R4", authorization=f"Bearer {token}")
    patient = f"Patient/{data.membership.profile_id}"
    cases = {
        "Task": ({"status": "requested", "intent": "order", "for": {"reference": patient}}, {"patient": patient}),
        "Goal": ({"lifecycleStatus": "active", "description": {"text": "walk"}, "subject": {"reference": patient}},
                 {"patient": patient}),
        "Appointment": ({"status": "booked", "participant": [{"actor": {"reference": patient}, "status": "accepted"}]},
                        {"actor": patient}),
        "Location": ({"status": "active", "name": "Fhirpy Ward"}, {"name": "fhirpy"}),
        "Communication": ({"status": "completed", "subject": {"reference": patient}}, {"subject": patient}),
        "ServiceRequest": ({"status": "active", "intent": "order", "subject": {"reference": patient}},
                           {"subject": patient, "status": "active"}),
        "QuestionnaireResponse": ({"status": "completed", "subject": {"reference": patient}}, {"subject": patient}),
        "CareTeam": ({"status": "active", "subject": {"reference": patient}}, {"patient": patient}),
        "PractitionerRole": ({"active": True}, {"active": "true"}),
        "Questionnaire": ({"status": "active", "url": "http://example.org/q/fhirpy"}, {"url": "http://example.org/q/fhirpy"}),
    }
    for resource_type, (fields, search) in cases.items():
        resource = client.resource(resource_type, **fields)
        resource.save()
        assert resource.id and resource["meta"]["versionId"] == "1", resource_type
        fetched = client.reference(resource_type, resource.id).to_resource()
        stored = fetched.serialize()
        assert fetched.id == resource.id and {key: stored[key] for key in fields} == fields, resource_type
        found = client.resources(resource_type).search(**search).fetch()
        assert [r.id for r in found] == [resource.id], resource_type
        resource["meta"] = {"tag": [{"system": "urn:fhirpy", "code": "updated"}]}
        resource.save()
        assert resource["meta"]["versionId"] == "2"
        assert [r.id for r in client.resources(resource_type).search(_tag="urn:fhirpy|updated").fetch()] == [
            resource.id]
        resource.delete()
        with pytest.raises(ResourceNotFound):
            client.reference(resource_type, resource.id).to_resource()
        row = Resource.objects.get(project=data.project, resource_type=resource_type, resource_id=resource.id)
        assert row.deleted and row.version_id == 3
