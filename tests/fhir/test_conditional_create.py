"""Conditional create: ``POST /<Type>`` with ``If-None-Exist`` (FHIR R4 §3.1.0.8.1), as
``@medplum/core``'s ``createResourceIfNoneExist`` sends it."""

from __future__ import annotations

import threading
import time

import pytest

from fhir_api.models import Resource
from tests.fhir.conftest import FHIR_JSON, Api, assert_outcome, mint, observation, seed

pytestmark = pytest.mark.django_db

BASE = "http://127.0.0.1:8000/fhir/R4"


def patient(mrn: str, family: str = "Lee") -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": mrn}],
            "name": [{"family": family}]}


def test_creates_when_none_matches_and_returns_the_match_after(full_api, project1):
    first = full_api.post("/Patient", patient("M-1"), HTTP_IF_NONE_EXIST="identifier=urn:mrn|M-1")
    assert first.status_code == 201, first.content
    created = first.json()
    assert first["Location"] == f"{BASE}/Patient/{created['id']}/_history/1" and first["ETag"] == 'W/"1"'
    again = full_api.post("/Patient", patient("M-1", family="Other"), HTTP_IF_NONE_EXIST="identifier=urn:mrn|M-1")
    assert again.status_code == 200, again.content
    assert again.json() == created  # the stored resource; the posted one is ignored
    assert again["Content-Type"] == f"{FHIR_JSON}; charset=utf-8"
    assert again["ETag"] == 'W/"1"' and again["Last-Modified"]
    assert again["Location"] == first["Location"]
    assert Resource.objects.filter(project=project1, resource_type="Patient").count() == 1
    # The "Type?criteria" form, and criteria that match nothing: another resource.
    other = full_api.post("/Patient", patient("M-2"), HTTP_IF_NONE_EXIST="Patient?identifier=urn:mrn|M-2&family=lee")
    assert other.status_code == 201 and other.json()["id"] != created["id"]


def test_several_matches_are_412_and_nothing_is_created(full_api, project1):
    seed(project1, patient("M-1"))
    seed(project1, patient("M-1"))
    response = full_api.post("/Patient", patient("M-1"), HTTP_IF_NONE_EXIST="identifier=M-1")
    assert_outcome(response, 412, "conflict")
    assert Resource.objects.filter(project=project1, resource_type="Patient").count() == 2


@pytest.mark.parametrize("header", ["", "?", "unknown=1", "identifier", "_count=1", "Observation?identifier=M-1",
                                    "birthdate=not-a-date", "identifier=a&_sort=_lastUpdated"])
def test_unusable_criteria_are_400(full_api, project1, header):
    response = full_api.post("/Patient", patient("M-1"), HTTP_IF_NONE_EXIST=header)
    assert_outcome(response, 400, "invalid", expression="If-None-Exist")
    assert not Resource.objects.filter(project=project1, resource_type="Patient").exists()


def test_an_invalid_new_resource_is_still_400(full_api):
    response = full_api.post("/Patient", {"resourceType": "Patient", "gender": 7}, HTTP_IF_NONE_EXIST="identifier=x")
    assert_outcome(response, 400, "invalid", expression="Patient.gender")


def test_matches_are_only_what_the_caller_can_see(client, app1, app2, alice, bob, project2):
    """Another patient's or project's resource is not a match: it is never returned."""
    theirs = seed(bob.project, observation(bob.profile, code="x-1"))
    seed(project2, observation(alice.profile, code="x-1"))
    api = Api(client, mint(client=app1, membership=alice, scope="openid patient/Observation.crs"))
    response = api.post("/Observation", observation(alice.profile, code="x-1"), HTTP_IF_NONE_EXIST="code=x-1")
    assert response.status_code == 201, response.content
    mine = response.json()
    assert mine["id"] != theirs["id"] and mine["subject"]["reference"] == alice.profile
    again = api.post("/Observation", observation(alice.profile, code="x-1"), HTTP_IF_NONE_EXIST="code=x-1")
    assert again.status_code == 200 and again.json()["id"] == mine["id"]


def test_without_search_permission_it_is_403(client, app1, alice):
    api = Api(client, mint(client=app1, membership=alice, scope="openid patient/Observation.c"))
    response = api.post("/Observation", observation(alice.profile), HTTP_IF_NONE_EXIST="code=8867-4")
    assert_outcome(response, 403, "forbidden")
    assert api.post("/Observation", observation(alice.profile)).status_code == 201  # a plain create is fine


@pytest.mark.postgresql(reason="the advisory lock is PostgreSQL's (SQLite serialises whole-database writes)")
@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_requests_create_one_resource(monkeypatch, project1, app1):
    """The first request is slowed down between its search and its insert, inside the lock:
    without the lock both would find nothing and both would create."""
    from fhir_api.repository import Repository
    from tests.oauth.test_races_postgres import concurrently

    token = mint(client=app1)
    original, first = Repository.create, threading.Lock()

    def slow_create(self, *args, **kwargs):
        if first.acquire(blocking=False):
            time.sleep(0.3)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(Repository, "create", slow_create)

    def post(http):
        return Api(http, token).post("/Patient", patient("RACE-1"), HTTP_IF_NONE_EXIST="identifier=urn:mrn|RACE-1")
    responses = concurrently(3, post)
    assert sorted(r.status_code for r in responses) == [200, 200, 201], [r.content for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert Resource.objects.filter(project=project1, resource_type="Patient").count() == 1


def test_capability_statement_says_so(anonymous):
    for resource in anonymous.get("/metadata").json()["rest"][0]["resource"]:
        if resource["type"] == "AuditEvent":  # read-only (tests/test_audit_trail.py)
            assert resource["conditionalCreate"] is False and resource["conditionalUpdate"] is False
            continue
        assert resource["conditionalCreate"] is True and resource["conditionalUpdate"] is True, resource["type"]
        assert resource["conditionalDelete"] == "single" and resource["conditionalRead"] == "full-support"
