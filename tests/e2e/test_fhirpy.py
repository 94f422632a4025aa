"""fhirpy 2.3.1 (the Python FHIR client) against the live server: CRUD, conditional update, a
transaction and ``$everything``, with a client_credentials token."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import client_credentials_token

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.mark.spec("FHIR R4 §3.1.0.4.3 conditional update; http.html#transaction (fhirpy)")
def test_fhirpy_crud_conditional_update_transaction_and_everything(seed, live_gunicorn):
    from fhirpy import SyncFHIRClient
    from fhirpy.base.exceptions import MultipleResourcesFound, ResourceNotFound

    from fhir_api.models import Resource
    from medplum_auth import services

    data = seed()
    backend, secret = services.create_client(data.project, "fhirpy backend", public=False)
    token = client_credentials_token(live_gunicorn.url, backend.client_id, secret)
    client = SyncFHIRClient(f"{live_gunicorn.url}/fhir/R4", authorization=f"Bearer {token}")
    patient_id = data.membership.profile_id

    # CRUD
    observation = client.resource("Observation", status="final", code={"text": "weight"},
                                  subject={"reference": f"Patient/{patient_id}"},
                                  identifier=[{"system": "urn:fhirpy", "value": "w-1"}])
    observation.save()
    assert observation.id and observation.meta["versionId"] == "1"
    fetched = client.resources("Observation").search(_id=observation.id).get()
    assert fetched.id == observation.id and fetched["code"]["text"] == "weight"

    # Conditional update: one match is updated in place, none creates, several are 412.
    changed = client.resource("Observation", status="amended", code={"text": "weight"},
                              subject={"reference": f"Patient/{patient_id}"},
                              identifier=[{"system": "urn:fhirpy", "value": "w-1"}])
    updated, created = client.resources("Observation").search(identifier="urn:fhirpy|w-1").update(changed)
    assert not created and updated.id == observation.id and updated.meta["versionId"] == "2"
    assert updated["status"] == "amended"
    fresh = client.resource("Observation", status="final", code={"text": "height"},
                            identifier=[{"system": "urn:fhirpy", "value": "h-1"}])
    made, created = client.resources("Observation").search(identifier="urn:fhirpy|h-1").update(fresh)
    assert created and made.id != observation.id
    with pytest.raises(MultipleResourcesFound):
        client.resources("Observation").search(status="amended,final").update(fresh)

    # A transaction with a urn:uuid reference, through the client's execute().
    response = client.execute("", method="post", data={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:p", "request": {"method": "POST", "url": "Patient"},
         "resource": {"resourceType": "Patient", "name": [{"family": "Fhirpy"}]}},
        {"request": {"method": "POST", "url": "Observation"},
         "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "hr"},
                      "subject": {"reference": "urn:uuid:p"}}},
        {"request": {"method": "PUT", "url": "Observation?identifier=urn:fhirpy|h-1"},
         "resource": {"resourceType": "Observation", "status": "cancelled", "code": {"text": "height"},
                      "identifier": [{"system": "urn:fhirpy", "value": "h-1"}]}}]})
    assert response["type"] == "transaction-response"
    assert [e["response"]["status"] for e in response["entry"]] == ["201", "201", "200"]
    new_patient = response["entry"][0]["resource"]["id"]
    assert response["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{new_patient}"
    assert response["entry"][2]["resource"]["id"] == made.id

    everything = client.execute(f"Patient/{new_patient}/$everything", method="get")
    assert {e["resource"]["resourceType"] for e in everything["entry"]} == {"Patient", "Observation"}
    assert everything["total"] == 2

    # A transaction with an invalid entry stores nothing.
    before = Resource.objects.filter(project=data.project).count()
    with pytest.raises(Exception) as failed:
        client.execute("", method="post", data={"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}},
            {"request": {"method": "POST", "url": "Patient"},
             "resource": {"resourceType": "Patient", "birthDate": "yesterday"}}]})
    assert "Bundle.entry[1]" in str(failed.value)
    assert Resource.objects.filter(project=data.project).count() == before

    observation.delete()
    with pytest.raises(ResourceNotFound):
        client.get("Observation", observation.id)
