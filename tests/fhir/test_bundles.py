"""Batch and transaction Bundles at ``POST /fhir/R4`` (FHIR R4 http.html#transaction)."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from fhir_api.models import Resource, ResourceVersion
from tests.fhir.conftest import FHIR, FHIR_JSON, Api, assert_outcome, mint, observation, seed

pytestmark = pytest.mark.django_db

BASE = "http://127.0.0.1:8000/fhir/R4"


def bundle(kind: str, *entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(method: str, url: str, resource: dict | None = None, full_url: str | None = None, **request: str) -> dict:
    entry: dict = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        entry["resource"] = resource
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def patient(mrn: str) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": mrn}], "name": [{"family": "Lee"}]}


def count(project, resource_type: str) -> int:
    return Resource.objects.filter(project=project, resource_type=resource_type, deleted=False).count()


@pytest.mark.spec("FHIR R4 http.html#transaction: urn:uuid references, transaction-response")
def test_transaction_creates_with_urn_uuid_references(full_api, project1):
    response = full_api.post("", bundle(
        "transaction",
        post("POST", "Observation", observation("urn:uuid:p-1"), "urn:uuid:o-1"),
        post("POST", "Patient", patient("T-1"), "urn:uuid:p-1")))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "transaction-response"
    obs_entry, patient_entry = body["entry"]
    assert obs_entry["response"]["status"] == "201" and patient_entry["response"]["status"] == "201"
    patient_id = patient_entry["resource"]["id"]
    assert obs_entry["resource"]["subject"]["reference"] == f"Patient/{patient_id}"
    assert patient_entry["response"]["location"] == f"{BASE}/Patient/{patient_id}/_history/1"
    assert patient_entry["response"]["etag"] == 'W/"1"' and patient_entry["response"]["lastModified"].endswith("Z")
    assert patient_entry["fullUrl"] == f"{BASE}/Patient/{patient_id}"
    stored = Resource.objects.get(project=project1, resource_type="Observation")
    assert stored.content["subject"]["reference"] == f"Patient/{patient_id}"
    assert stored.patient == f"Patient/{patient_id}"


def test_transaction_with_one_invalid_entry_stores_nothing(full_api, project1):
    existing = seed(project1, patient("T-0"))
    response = full_api.post("", bundle(
        "transaction",
        post("POST", "Patient", patient("T-1")),
        post("DELETE", f"Patient/{existing['id']}"),
        post("POST", "Observation", observation("Patient/x", effectiveDateTime="not-a-date"))))
    body = assert_outcome(response, 400, "invalid", expression="Bundle.entry[2]")
    assert "Bundle.entry[2]" in body["issue"][0]["details"]["text"]
    assert count(project1, "Patient") == 1 and count(project1, "Observation") == 0
    assert ResourceVersion.objects.filter(resource__project=project1).count() == 1  # the delete rolled back too


def test_transaction_with_an_unknown_urn_uuid_is_400(full_api, project1):
    response = full_api.post("", bundle("transaction", post("POST", "Patient", patient("T-1")),
                                        post("POST", "Observation", observation("urn:uuid:nobody"))))
    body = assert_outcome(response, 400, "invalid", expression="Bundle.entry[1]")
    assert "urn:uuid:nobody" in body["issue"][0]["details"]["text"]
    assert count(project1, "Patient") == 0


def test_conditional_reference_is_resolved_as_the_caller(full_api, project1):
    target = seed(project1, patient("C-1"))
    response = full_api.post("", bundle("transaction", post("POST", "Observation",
                                                            observation("Patient?identifier=urn:mrn|C-1"))))
    assert response.status_code == 200, response.content
    assert response.json()["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{target['id']}"
    missing = full_api.post("", bundle("transaction", post("POST", "Observation",
                                                           observation("Patient?identifier=urn:mrn|none"))))
    assert_outcome(missing, 400, "invalid", expression="Bundle.entry[0]")


def test_entries_run_in_the_spec_order_and_answer_in_the_request_order(full_api, project1):
    """DELETE, POST, PUT, GET: the GET sees the POST's resource, listed first or not."""
    old = seed(project1, patient("O-1"))
    response = full_api.post("", bundle(
        "batch",
        post("GET", "Patient?identifier=urn:mrn|O-2"),
        post("PUT", "Patient?identifier=urn:mrn|O-2", {**patient("O-2"), "gender": "female"}),
        post("POST", "Patient", patient("O-2")),
        post("DELETE", f"Patient/{old['id']}"),
        post("GET", f"Patient/{old['id']}")))
    assert response.status_code == 200, response.content
    search, update, create, delete, read = response.json()["entry"]
    assert create["response"]["status"] == "201"
    assert update["response"]["status"] == "200" and update["resource"]["gender"] == "female"
    assert update["resource"]["id"] == create["resource"]["id"] and update["response"]["etag"] == 'W/"2"'
    assert search["resource"]["total"] == 1 and search["resource"]["entry"][0]["resource"]["gender"] == "female"
    assert delete["response"]["status"] == "200" and delete["response"]["outcome"]["id"] == "allok"
    assert read["response"]["status"] == "410"
    assert read["response"]["outcome"]["resourceType"] == "OperationOutcome"


def test_batch_entry_the_policy_forbids_is_403_in_its_slot(client, app1, alice, bob, project1):
    """A patient's token: its own reads and creates succeed, another patient's data is 404, a
    type outside its scopes is 403; each in its own slot, the others unaffected."""
    theirs = seed(project1, observation(bob.profile))
    api = Api(client, mint(client=app1, membership=alice, scope="openid patient/Patient.rs patient/Observation.crs"))
    response = api.post("", bundle(
        "batch",
        post("GET", f"Patient/{alice.profile_id}"),
        post("POST", "Condition", {"resourceType": "Condition", "subject": {"reference": alice.profile}}),
        post("POST", "Observation", observation(alice.profile)),
        post("GET", f"Observation/{theirs['id']}"),
        post("GET", f"Patient/{bob.profile_id}"),
        post("GET", "Observation"),
        post("POST", "Observation", observation(bob.profile))))
    assert response.status_code == 200, response.content
    own, condition, created, their_obs, their_patient, search, for_bob = response.json()["entry"]
    assert own["response"]["status"] == "200" and own["resource"]["id"] == alice.profile_id
    assert condition["response"]["status"] == "403"
    assert condition["response"]["outcome"]["issue"][0]["code"] == "forbidden"
    assert created["response"]["status"] == "201"
    assert their_obs["response"]["status"] == "404" and their_patient["response"]["status"] == "404"
    assert "resource" not in their_obs and "resource" not in their_patient
    assert [e["resource"]["subject"]["reference"] for e in search["resource"]["entry"]] == [alice.profile]
    assert for_bob["response"]["status"] == "403"
    assert count(project1, "Condition") == 0
    assert Resource.objects.filter(project=project1, resource_type="Observation", patient=alice.profile).count() == 1


def test_the_same_entry_answers_what_its_single_request_answers(client, app1, alice, bob, project1):
    """One function serves both: the entry's outcome is the single request's, byte for byte."""
    api = Api(client, mint(client=app1, membership=alice, scope="openid patient/Patient.rs patient/Observation.rs"))
    for url in (f"Patient/{bob.profile_id}", "Observation?code=", "Spaceship/1", f"Patient/{alice.profile_id}"):
        single = api.get(f"/{url}")
        entry = api.post("", bundle("batch", post("GET", url))).json()["entry"][0]
        assert entry["response"]["status"] == str(single.status_code)
        assert (entry.get("resource") or entry["response"]["outcome"]) == single.json()


@override_settings(MEDPLUM_AUTH={"FHIR_BUNDLE_MAX_ENTRIES": 3, "FHIR_BUNDLE_MAX_BYTES": 2000})
def test_oversized_bundles_are_refused_with_an_outcome(full_api, project1):
    many = bundle("batch", *[post("POST", "Patient", patient(f"M-{i}")) for i in range(4)])
    body = assert_outcome(full_api.post("", many), 413, "too-costly")
    assert "FHIR_BUNDLE_MAX_ENTRIES" in body["issue"][0]["details"]["text"]
    big = bundle("batch", post("POST", "Patient", {**patient("B-1"), "name": [{"family": "x" * 3000}]}))
    body = assert_outcome(full_api.post("", big), 413, "too-costly")
    assert "FHIR_BUNDLE_MAX_BYTES" in body["issue"][0]["details"]["text"]
    assert count(project1, "Patient") == 0


@pytest.mark.parametrize("body", [
    "not json", [], {"resourceType": "Patient"}, {"resourceType": "Bundle", "type": "collection"},
    {"resourceType": "Bundle", "type": "batch", "entry": {}},
    # issue 13 (schemathesis): an unhashable type was a 500 (TypeError in the `in KINDS` test)
    {"resourceType": "Bundle", "type": {}, "entry": []}, {"resourceType": "Bundle", "type": ["batch"]},
])
def test_unusable_bundles_are_400(full_api, body):
    assert_outcome(full_api.post("", body), 400, "invalid")


@pytest.mark.parametrize("entry", [
    {}, {"request": {"method": "FETCH", "url": "Patient"}}, {"request": {"method": "GET"}},
    {"request": {"method": "GET", "url": "Spaceship"}}, {"request": {"method": "POST", "url": "Patient"}},
    {"request": {"method": "PATCH", "url": "Patient/x"}, "resource": {"resourceType": "Patient"}},
    {"request": {"method": "POST", "url": "Patient/x/_history"}},
    {"request": {"method": "GET", "url": "Patient/x", "ifModifiedSince": "yesterday"}},
    {"request": {"method": "PUT", "url": "Patient?identifier=x"}, "resource": "text"},
])
def test_unusable_entries_fail_in_their_slot_never_500(full_api, entry):
    response = full_api.post("", bundle("batch", entry, post("GET", "Patient")))
    assert response.status_code == 200, response.content
    failed, ok = response.json()["entry"]
    assert failed["response"]["status"][0] == "4"
    assert failed["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert ok["response"]["status"] == "200"


def test_patch_entry_takes_a_binary_json_patch(full_api, project1):
    import base64

    stored = seed(project1, patient("P-1"))
    document = base64.b64encode(json.dumps([{"op": "add", "path": "/gender", "value": "male"}]).encode()).decode()
    response = full_api.post("", bundle("transaction", post(
        "PATCH", f"Patient/{stored['id']}",
        {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": document})))
    assert response.status_code == 200, response.content
    assert response.json()["entry"][0]["resource"]["gender"] == "male"


def test_autobatch_style_gets_are_reads_and_searches(full_api, project1):
    """@medplum/core's autoBatch: GETs relative to the base, with query strings, bodies absent."""
    one = seed(project1, patient("A-1"))
    response = full_api.client.post(f"{FHIR}/", json.dumps(bundle(
        "batch", {"request": {"method": "GET", "url": f"Patient/{one['id']}"}},
        {"request": {"method": "GET", "url": "Patient?identifier=urn:mrn|A-1&_count=5"}},
        {"request": {"method": "GET", "url": f"{BASE}/Patient/{one['id']}/_history"}})),
        content_type=FHIR_JSON, HTTP_AUTHORIZATION=f"Bearer {full_api.token}")
    assert response.status_code == 200, response.content
    read, search, history = response.json()["entry"]
    assert read["resource"] == one and "outcome" not in read["response"]
    assert search["resource"]["type"] == "searchset" and search["resource"]["entry"][0]["resource"] == one
    assert history["resource"]["type"] == "history"


def test_anonymous_bundle_is_401(anonymous):
    assert_outcome(anonymous.post("", bundle("batch")), 401, "login")


def test_capability_statement_lists_batch_transaction_and_the_operations(anonymous):
    rest = anonymous.get("/metadata").json()["rest"][0]
    assert rest["interaction"] == [{"code": "batch"}, {"code": "transaction"}]
    assert [op["name"] for op in rest["operation"]] == ["validate", "everything"]
