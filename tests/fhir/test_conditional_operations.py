"""Conditional update and delete, If-Match, If-None-Match / If-Modified-Since reads; $validate;
Patient/$everything."""

from __future__ import annotations

import pytest
from django.utils.http import http_date

from fhir_api.models import Resource
from tests.fhir.conftest import Api, assert_outcome, condition, mint, observation, seed

pytestmark = pytest.mark.django_db


def obs(patient: str, identifier: str, **extra) -> dict:
    return observation(patient, identifier=[{"system": "urn:obs", "value": identifier}], **extra)


@pytest.mark.spec("FHIR R4 §3.1.0.4.3 conditional update")
def test_conditional_update_creates_then_updates_then_412(full_api, project1, alice):
    first = full_api.put("/Observation?identifier=urn:obs|U-1", obs(alice.profile, "U-1"))
    assert first.status_code == 201, first.content
    created = first.json()
    assert first["Location"].endswith(f"/Observation/{created['id']}/_history/1")
    second = full_api.put("/Observation?identifier=urn:obs|U-1", obs(alice.profile, "U-1", status="amended"))
    assert second.status_code == 200 and second["ETag"] == 'W/"2"'
    assert second.json()["id"] == created["id"] and second.json()["status"] == "amended"
    assert Resource.objects.filter(project=project1, resource_type="Observation").count() == 1
    seed(project1, obs(alice.profile, "U-1"))
    assert_outcome(full_api.put("/Observation?identifier=urn:obs|U-1", obs(alice.profile, "U-1")), 412, "conflict")
    wrong_id = full_api.put("/Observation?identifier=urn:obs|none", {**obs(alice.profile, "none"), "id": "x"})
    assert_outcome(wrong_id, 400, "invalid")
    assert_outcome(full_api.put("/Observation?bogus=1", obs(alice.profile, "U-2")), 400, "invalid")


def test_conditional_update_sees_only_what_the_caller_may_see(client, app1, alice, bob, project1):
    theirs = seed(project1, obs(bob.profile, "S-1"))
    api = Api(client, mint(client=app1, membership=alice, scope="openid patient/Observation.cruds"))
    response = api.put("/Observation?identifier=urn:obs|S-1", obs(alice.profile, "S-1"))
    assert response.status_code == 201, response.content  # Bob's match is invisible: a new resource
    assert response.json()["id"] != theirs["id"]
    assert Resource.objects.get(resource_id=theirs["id"]).version_id == 1
    assert api.delete("/Observation?identifier=urn:obs|S-1").status_code == 200
    assert Resource.objects.get(resource_id=theirs["id"]).deleted is False  # only hers was deleted
    assert Resource.objects.get(resource_id=response.json()["id"]).deleted is True


def test_conditional_delete(full_api, project1, alice):
    one = seed(project1, obs(alice.profile, "D-1"))
    response = full_api.delete("/Observation?identifier=urn:obs|D-1")
    assert response.status_code == 200 and response.json()["id"] == "allok"
    assert Resource.objects.get(resource_id=one["id"]).deleted
    assert full_api.delete("/Observation?identifier=urn:obs|D-1").status_code == 200  # nothing left: OK
    seed(project1, obs(alice.profile, "D-2"))
    seed(project1, obs(alice.profile, "D-2"))
    assert_outcome(full_api.delete("/Observation?identifier=urn:obs|D-2"), 412, "conflict")
    assert_outcome(full_api.delete("/Observation"), 400, "invalid")


@pytest.mark.spec("FHIR R4 §3.1.0.5 version-aware update; RFC 9110 §13.1.2, §13.1.3")
def test_if_match_and_conditional_reads(full_api, project1, alice):
    stored = seed(project1, obs(alice.profile, "V-1"))
    url = f"/Observation/{stored['id']}"
    assert full_api.put(url, {**stored, "status": "amended"}, HTTP_IF_MATCH='W/"1"').status_code == 200
    assert_outcome(full_api.put(url, stored, HTTP_IF_MATCH='W/"1"'), 412, "conflict")
    assert_outcome(full_api.put("/Observation?identifier=urn:obs|V-1", obs(alice.profile, "V-1"),
                                HTTP_IF_MATCH='W/"1"'), 412, "conflict")
    current = full_api.get(url)
    not_modified = full_api.get(url, HTTP_IF_NONE_MATCH='W/"2"')
    assert not_modified.status_code == 304 and not_modified.content == b"" and not_modified["ETag"] == 'W/"2"'
    assert full_api.get(url, HTTP_IF_NONE_MATCH='W/"1"').status_code == 200
    assert full_api.get(url, HTTP_IF_MODIFIED_SINCE=current["Last-Modified"]).status_code == 304
    assert full_api.get(url, HTTP_IF_MODIFIED_SINCE=http_date(0)).status_code == 200
    assert full_api.get(url, HTTP_IF_MODIFIED_SINCE="garbage").status_code == 200


# --- $validate -----------------------------------------------------------------------------------

@pytest.mark.spec("FHIR R4 resource-operation-validate")
def test_validate_good_and_bad(full_api, project1, alice):
    good = full_api.post("/Observation/$validate", obs(alice.profile, "X-1"))
    assert good.status_code == 200 and good.json()["id"] == "allok"
    bad = full_api.post("/Observation/$validate", obs(alice.profile, "X-1", effectiveDateTime="nope"))
    assert_outcome(bad, 400, "invalid", expression="Observation.effectiveDateTime")
    wrapped = full_api.post("/Observation/$validate", {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": obs(alice.profile, "X-1")}, {"name": "mode", "valueCode": "create"}]})
    assert wrapped.status_code == 200, wrapped.content
    assert_outcome(full_api.post("/Observation/$validate?mode=bogus", obs(alice.profile, "X")), 400, "invalid")
    assert_outcome(full_api.post("/Observation/$validate", {"resourceType": "Patient"}), 400, "invalid")
    assert not Resource.objects.filter(project=project1, resource_type="Observation").exists()


def test_validate_modes_are_the_write_rolled_back(client, app1, alice, bob, project1):
    mine, theirs = seed(project1, obs(alice.profile, "M-1")), seed(project1, obs(bob.profile, "M-2"))
    api = Api(client, mint(client=app1, membership=alice, scope="openid patient/Observation.cruds"))
    update = api.post(f"/Observation/{mine['id']}/$validate?mode=update", {**mine, "status": "amended"})
    assert update.status_code == 200, update.content
    assert api.post(f"/Observation/{mine['id']}/$validate?mode=delete", {}).status_code == 200
    assert Resource.objects.get(resource_id=mine["id"]).version_id == 1  # nothing stored
    assert not Resource.objects.get(resource_id=mine["id"]).deleted
    assert_outcome(api.post(f"/Observation/{theirs['id']}/$validate?mode=delete", {}), 404, "not-found")
    assert_outcome(api.post("/Observation/$validate?mode=create", obs(bob.profile, "M-3")), 403, "forbidden")
    assert_outcome(api.post("/Observation/$validate?mode=delete", {}), 400, "invalid")
    assert Resource.objects.filter(project=project1, resource_type="Observation").count() == 2


# --- $everything ---------------------------------------------------------------------------------

@pytest.fixture
def records(project1, alice, bob):
    return {
        "alice": [seed(project1, obs(alice.profile, f"E-{i}")) for i in range(3)]
        + [seed(project1, condition(alice.profile))],
        "bob": [seed(project1, obs(bob.profile, "E-9")), seed(project1, condition(bob.profile))],
    }


def ids(body: dict) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in body.get("entry", [])}


@pytest.mark.spec("FHIR R4 patient-operation-everything")
def test_everything_as_practitioner_pages_and_filters(client, app1, practitioner, alice, records):
    api = Api(client, mint(client=app1, membership=practitioner))
    expected = {alice.profile} | {f"{r['resourceType']}/{r['id']}" for r in records["alice"]}
    whole = api.get(f"/Patient/{alice.profile_id}/$everything")
    assert whole.status_code == 200, whole.content
    assert whole.json()["type"] == "searchset" and whole.json()["total"] == 5 and ids(whole.json()) == expected
    first = api.get(f"/Patient/{alice.profile_id}/$everything", {"_count": 2}).json()
    nxt = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = client.get(nxt.replace("http://127.0.0.1:8000", ""), HTTP_AUTHORIZATION=f"Bearer {api.token}").json()
    assert len(first["entry"]) == 2 and ids(first).isdisjoint(ids(second))
    only = api.get(f"/Patient/{alice.profile_id}/$everything", {"_type": "Condition"}).json()
    assert {e["resource"]["resourceType"] for e in only["entry"]} == {"Condition"}
    assert api.get(f"/Patient/{alice.profile_id}/$everything", {"_since": "2999-01-01T00:00:00Z"}).json()["total"] == 0
    for params in ({"_type": "Spaceship"}, {"_since": "soon"}, {"bogus": "1"}):
        assert_outcome(api.get(f"/Patient/{alice.profile_id}/$everything", params), 400, "invalid")


def test_everything_as_a_patient_is_only_its_own(client, app1, alice, bob, records):
    api = Api(client, mint(client=app1, membership=alice, scope="openid patient/*.rs"))
    own = api.get(f"/Patient/{alice.profile_id}/$everything")
    assert own.status_code == 200 and own.json()["total"] == 5
    assert not any(bob.profile_id in ref or r["id"] in ref for ref in ids(own.json()) for r in records["bob"])
    assert_outcome(api.get(f"/Patient/{bob.profile_id}/$everything"), 404, "not-found")
    # Scopes narrow it further: an Observation-only token gets no Conditions.
    narrow = Api(client, mint(client=app1, membership=alice, scope="openid patient/Patient.rs patient/Observation.rs"))
    entries = narrow.get(f"/Patient/{alice.profile_id}/$everything").json()["entry"]
    types = {e["resource"]["resourceType"] for e in entries}
    assert types == {"Patient", "Observation"}
    in_batch = api.post("", {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{bob.profile_id}/$everything"}},
        {"request": {"method": "GET", "url": f"Patient/{alice.profile_id}/$everything"}}]}).json()["entry"]
    assert in_batch[0]["response"]["status"] == "404" and in_batch[1]["resource"]["total"] == 5
