"""``_revinclude``: the resources that refer to the matches, each passing the caller's own policy.

The world is ``test_include.py``'s: Alice's observations a1, a2 (a1 performed by Bob, the
practitioner, Carol of project 2 …), Bob's b1 performed by Alice, Carol's c1 in project 2.
"""

from __future__ import annotations

import pytest

from fhir_api import repository
from tests.factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory
from tests.fhir.conftest import Api, assert_outcome, mint, observation, seed
from tests.fhir.test_include import _entries, _refs, build_world
from tests.fhir.test_isolation import PATIENT_SCOPES

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(project1, project2, alice, bob, practitioner):
    return build_world(project1, project2, alice, bob, practitioner)


def _obs(world, *names: str) -> set[str]:
    return {f"Observation/{world['obs'][name]}" for name in names}


def test_revinclude_adds_what_refers_to_the_matches_outside_total(full_api, world):
    response = full_api.get("/Patient", {"_revinclude": "Observation:subject"})
    assert _refs(response, "match") == {world["A"], world["B"]}
    assert _refs(response) == _obs(world, "a1", "a2", "b1")  # not c1: project 2
    assert response.json()["total"] == 2
    by_performer = full_api.get("/Patient", {"_id": world["A"].split("/")[1], "_revinclude": "Observation:performer"})
    assert _refs(by_performer) == _obs(world, "b1")
    targeted = full_api.get("/Patient", {"_revinclude": "Observation:performer:Patient"})
    assert _refs(targeted) == _obs(world, "a1", "a2", "b1")
    practitioners = full_api.get("/Practitioner", {"_revinclude": "Observation:performer"})
    assert _refs(practitioners) == _obs(world, "a1")
    # Both at once, and with _include: each resource once.
    both = full_api.get("/Patient", [("_revinclude", "Observation:subject"), ("_revinclude", "Observation:performer")])
    refs = [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in _entries(both, "include")]
    assert sorted(refs) == sorted(_obs(world, "a1", "a2", "b1"))
    self_link = full_api.get("/Observation", {"_include": "Observation:subject", "_revinclude": "Observation:subject"})
    assert response.status_code == 200 and self_link.status_code == 200  # nothing refers to Observations


@pytest.mark.parametrize("scope", PATIENT_SCOPES)
@pytest.mark.parametrize("revinclude", ["Observation:subject", "Observation:performer", "Observation:patient",
                                        "Condition:subject", "Observation:performer:Patient"])
def test_patient_a_never_revincludes_patient_b(client, app1, world, scope, revinclude):
    api = Api(client, mint(client=app1, membership=world["alice"], scope=scope))
    response = api.get("/Patient", {"_revinclude": revinclude})
    assert _refs(response, "match") == {world["A"]}
    expected = _obs(world, "a1", "a2") if revinclude.startswith("Observation:") and "performer" not in revinclude \
        else set()
    # b1 (Bob's) refers to Alice as its performer: outside her policy, it is never revincluded.
    assert _refs(response) == expected


def test_a_type_the_policy_does_not_let_read_contributes_nothing(client, project1, world):
    policy = AccessPolicyFactory(project=project1, resources=[{"resourceType": "Patient"}])
    member = MembershipFactory(project=project1, profile_type="Practitioner", access_policy=policy)
    api = Api(client, mint(client=ClientApplicationFactory(project=project1), membership=member))
    response = api.get("/Patient", {"_revinclude": "Observation:subject"})
    assert _refs(response, "match") == {world["A"], world["B"]} and _refs(response) == set()


def test_revincluding_through_a_hidden_reference_is_403(client, project1, world):
    policy = AccessPolicyFactory(project=project1, resources=[
        {"resourceType": "Patient"}, {"resourceType": "Observation", "hiddenFields": ["performer"]}])
    member = MembershipFactory(project=project1, profile_type="Practitioner", access_policy=policy)
    api = Api(client, mint(client=ClientApplicationFactory(project=project1), membership=member))
    assert_outcome(api.get("/Patient", {"_revinclude": "Observation:performer"}), 403, "forbidden")
    assert_outcome(api.get("/Patient", {"_revinclude": "Observation:performer", "_id": "none"}), 403, "forbidden")
    assert _refs(api.get("/Patient", {"_revinclude": "Observation:subject"})) == _obs(world, "a1", "a2", "b1")


@pytest.mark.parametrize("value", ["*", "Observation", "Observation:", "Observation:code", "Observation:unknown",
                                   "Observation:subject:Practitioner",
                                   "Observation:patient:Patient:x", "AuditEvent:entity", "Unknown:subject", ""])
def test_unsupported_revinclude_is_400(full_api, world, value):
    assert_outcome(full_api.get("/Patient", {"_revinclude": value}), 400, "invalid", "_revinclude")
    assert_outcome(full_api.get("/Patient", {"_revinclude:iterate": "Observation:subject"}), 400, "invalid",
                   "_revinclude:iterate")
    # Observation's patient parameter refers to Patients only.
    assert_outcome(full_api.get("/Practitioner", {"_revinclude": "Observation:patient"}), 400, "invalid",
                   "_revinclude")


def test_too_many_are_cut_with_an_outcome_entry(full_api, world, project1, monkeypatch):
    monkeypatch.setattr(repository, "MAX_REVINCLUDES", 2)
    import fhir_api.interactions as interactions
    monkeypatch.setattr(interactions, "MAX_REVINCLUDES", 2)
    for n in range(3):
        seed(project1, observation(world["A"], code=f"x{n}"))
    body = full_api.get("/Patient", {"_revinclude": "Observation:subject"}).json()
    modes = [e["search"]["mode"] for e in body["entry"]]
    assert modes.count("include") == 2 and modes[-1] == "outcome"
    outcome = body["entry"][-1]["resource"]
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["severity"] == "warning"
    assert "first 2" in outcome["issue"][0]["details"]["text"]


def test_capability_statement_lists_every_revinclude_and_each_works(anonymous, full_api, world):
    resources = {r["type"]: r for r in anonymous.get("/metadata").json()["rest"][0]["resource"]}
    assert {"Observation:subject", "Observation:patient", "Observation:performer"} <= set(
        resources["Patient"]["searchRevInclude"])
    assert "Observation:patient" not in resources["Practitioner"]["searchRevInclude"]  # patient refers to Patient
    for resource_type, resource in resources.items():
        for value in resource["searchRevInclude"]:
            assert full_api.get(f"/{resource_type}", {"_revinclude": value}).status_code == 200, (resource_type, value)
