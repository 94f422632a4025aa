"""``_include``: referenced resources in the searchset, each passing the caller's own policy.

An included resource is served only when the token could read it (the ``read`` decision for its
type, filtered in the query and scoped to the project): patient A's token never includes patient
B, a policy without Patient reads includes no Patient (not an error), and includes are never
counted in ``total``.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_api.models import Resource
from fhir_api.repository import Repository
from tests.factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory
from tests.fhir.conftest import FHIR, Api, assert_outcome, mint, observation, seed
from tests.fhir.test_isolation import PATIENT_SCOPES

pytestmark = pytest.mark.django_db


def _entries(response: Any, mode: str) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.content
    return [e for e in response.json().get("entry", []) if e["search"]["mode"] == mode]


def _refs(response: Any, mode: str = "include") -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in _entries(response, mode)}


@pytest.fixture
def world(project1, project2, alice, bob, practitioner):
    return build_world(project1, project2, alice, bob, practitioner)


def build_world(project1: Any, project2: Any, alice: Any, bob: Any, practitioner: Any) -> dict[str, Any]:
    """Project 1: Alice, Bob, a practitioner and an organization; project 2: Carol.

    Alice's observations refer to Bob (as performer), the practitioner, and ids that exist only
    in project 2, so that an include which ignored the policy or the project would show them.
    """
    carol = MembershipFactory(project=project2, profile_type="Patient")
    seed(project2, {"resourceType": "Patient", "name": [{"family": "Carter"}]}, resource_id=carol.profile_id)
    seed(project2, {"resourceType": "Patient", "name": [{"family": "Elsewhere"}]}, resource_id="only-in-2")
    org = seed(project1, {"resourceType": "Organization", "name": "Clinic"})
    performers = [{"reference": bob.profile}, {"reference": practitioner.profile},
                  {"reference": carol.profile}, {"reference": "Patient/only-in-2"},
                  {"reference": f"Organization/{org['id']}"}]
    a1 = seed(project1, observation(alice.profile, performer=performers))["id"]
    a2 = seed(project1, observation(alice.profile, code="9279-1", performer=performers[:1]))["id"]
    b1 = seed(project1, observation(bob.profile, performer=[{"reference": alice.profile}]))["id"]
    c1 = seed(project2, observation(carol.profile))["id"]
    return {"alice": alice, "bob": bob, "carol": carol, "practitioner": practitioner, "org": org["id"],
            "A": alice.profile, "B": bob.profile, "C": carol.profile, "D": practitioner.profile,
            "obs": {"a1": a1, "a2": a2, "b1": b1, "c1": c1}}


# --- what is included --------------------------------------------------------------------------

def test_include_subject_adds_each_patient_once_outside_total(full_api, world):
    response = full_api.get("/Observation", {"_include": "Observation:subject"})
    body = response.json()
    assert body["total"] == 3  # project 1's observations; the includes are not counted
    assert len(_entries(response, "match")) == 3
    includes = _entries(response, "include")
    assert _refs(response) == {world["A"], world["B"]}
    assert len(includes) == 2  # Alice is referenced twice, included once
    for entry in includes:
        resource = entry["resource"]
        assert entry["fullUrl"].endswith(f"{FHIR}/{resource['resourceType']}/{resource['id']}")
    # Matches come first, then the includes.
    modes = [e["search"]["mode"] for e in body["entry"]]
    assert modes == sorted(modes, key=["match", "include"].index)


@pytest.mark.parametrize("value", ["Observation:patient", "Observation:subject:Patient", "Observation:patient:Patient"])
def test_include_patient_forms(full_api, world, value):
    response = full_api.get("/Observation", {"_include": value, "subject": world["A"]})
    assert _refs(response, "match") == {f"Observation/{world['obs']['a1']}", f"Observation/{world['obs']['a2']}"}
    assert _refs(response) == {world["A"]}


def test_generic_reference_include_and_target_type(full_api, world):
    """Any reference parameter of the searched type; ``:Type`` keeps one target type."""
    params = {"_id": world["obs"]["a1"]}
    everything = _refs(full_api.get("/Observation", {**params, "_include": "Observation:performer"}))
    # Carol and only-in-2 live in project 2: never included in project 1.
    assert everything == {world["B"], world["D"], f"Organization/{world['org']}"}
    assert _refs(full_api.get("/Observation", {**params, "_include": "Observation:performer:Practitioner"})) == {
        world["D"]}
    both = full_api.get("/Observation", [("_id", world["obs"]["a1"]), ("_include", "Observation:subject"),
                                         ("_include", "Observation:performer:Patient")])
    assert _refs(both) == {world["A"], world["B"]}
    assert _refs(full_api.get("/Patient", {"_id": world["A"].split("/")[1],
                                           "_include": "Patient:general-practitioner"})) == set()


def test_include_follows_paging_and_is_kept_in_links(full_api, world):
    response = full_api.get("/Observation", {"_include": "Observation:subject", "_count": 1,
                                             "_sort": "_lastUpdated"})
    body = response.json()
    assert [e["resource"]["id"] for e in _entries(response, "match")] == [world["obs"]["a1"]]
    assert _refs(response) == {world["A"]}  # only the page's matches' references
    next_url = next(link["url"] for link in body["link"] if link["relation"] == "next")
    assert "_include=Observation%3Asubject" in next_url
    last = full_api.get("/Observation", {"_include": "Observation:subject", "_count": 1, "_offset": 2,
                                         "_sort": "_lastUpdated"})
    assert _refs(last) == {world["B"]}


def test_no_includes_without_matches_or_entries(full_api, world):
    counted = full_api.get("/Observation", {"_include": "Observation:subject", "_summary": "count"}).json()
    assert counted["total"] == 3 and "entry" not in counted
    assert full_api.get("/Observation", {"_include": "Observation:subject", "_count": 0}).json()["entry"] == []
    assert full_api.get("/Observation", {"_include": "Observation:subject", "code": "none"}).json()["entry"] == []


def test_deleted_references_are_not_included(full_api, world, project1):
    Repository(project1.pk, None).delete("Patient", world["B"].split("/")[1])
    response = full_api.get("/Observation", {"_include": "Observation:subject"})
    assert _refs(response) == {world["A"]}


@pytest.mark.parametrize(("params", "expression"), [
    ({"_include": "*"}, "_include"),
    ({"_include": "Observation"}, "_include"),
    ({"_include": "Observation:"}, "_include"),
    ({"_include": "Observation:*"}, "_include"),
    ({"_include": "Observation:code"}, "_include"),  # not a reference parameter
    ({"_include": "Observation:unknown"}, "_include"),
    ({"_include": "Patient:organization"}, "_include"),  # another type's parameter
    ({"_include": "Observation:patient:Practitioner"}, "_include"),  # patient only refers to Patient
    ({"_include": "Observation:subject:Unknown"}, "_include"),
    ({"_include": "Observation:subject:Patient:x"}, "_include"),
    ({"_include": ""}, "_include"),
    ({"_include:iterate": "Observation:subject"}, "_include:iterate"),
    ({"_revinclude": "AuditEvent:entity"}, "_revinclude"),  # AuditEvent is not stored here
])
def test_unsupported_include_is_400(full_api, world, params, expression):
    assert_outcome(full_api.get("/Observation", params), 400, "invalid", expression)


# --- enforcement ---------------------------------------------------------------------------------

INCLUDES = ["Observation:subject", "Observation:patient", "Observation:subject:Patient", "Observation:performer",
            "Observation:performer:Patient", "Observation:performer:Practitioner"]
SEARCHES: list[dict[str, str]] = [{}, {"code": "8867-4"}, {"_sort": "-_lastUpdated"}]


@pytest.mark.parametrize("scope", PATIENT_SCOPES)
@pytest.mark.parametrize("include", INCLUDES)
@pytest.mark.parametrize("search", SEARCHES)
def test_patient_a_never_includes_patient_b(client, world, app1, scope, include, search):
    """Alice's own observations name Bob, the practitioner and project 2's patients: none comes back."""
    api = Api(client, mint(client=app1, membership=world["alice"], scope=scope))
    plain = api.get("/Observation", search)
    response = api.get("/Observation", {**search, "_include": include})
    assert response.json()["total"] == plain.json()["total"] == len(_entries(response, "match"))
    assert _refs(response, "match") == _refs(plain, "match")
    assert _refs(response, "match") <= {f"Observation/{world['obs'][k]}" for k in ("a1", "a2")}
    included = _refs(response)
    assert included <= {world["A"]}, included
    for forbidden in (world["B"], world["C"], world["D"], "Patient/only-in-2", f"Organization/{world['org']}"):
        assert forbidden not in included
    if include in ("Observation:subject", "Observation:patient", "Observation:subject:Patient"):
        assert included == {world["A"]}  # her own Patient, which her policy lets her read


@pytest.mark.parametrize("include", ["Observation:subject", "Observation:performer"])
def test_bobs_token_does_not_include_alice(client, world, app1, include):
    """Bob's observation names Alice as performer: his token includes himself at most."""
    api = Api(client, mint(client=app1, membership=world["bob"], scope="openid patient/*.rs"))
    response = api.get("/Observation", {"_include": include})
    assert _refs(response, "match") == {f"Observation/{world['obs']['b1']}"}
    assert _refs(response) == ({world["B"]} if include == "Observation:subject" else set())


@pytest.mark.parametrize("scope", [
    "openid patient/Observation.rs",  # no Patient scope
    "openid patient/Observation.rs patient/Patient.s",  # Patient search but no read
    "openid patient/Observation.read",
])
def test_scopes_without_patient_read_include_no_patient(client, world, app1, scope):
    api = Api(client, mint(client=app1, membership=world["alice"], scope=scope))
    response = api.get("/Observation", {"_include": "Observation:subject"})
    assert len(_entries(response, "match")) == 2
    assert _refs(response) == set()


def test_policy_forbidding_patient_reads_includes_no_patient(client, world, project1):
    """A client_credentials policy with Observation only: 200, the matches, no Patient (not 403)."""
    policy = AccessPolicyFactory(project=project1, resources=[
        {"resourceType": "Observation", "interaction": ["read", "search"]},
        {"resourceType": "Practitioner", "interaction": ["search"]},  # search without read: not included
    ])
    api = Api(client, mint(client=ClientApplicationFactory(project=project1, access_policy=policy)))
    response = api.get("/Observation", [("_include", "Observation:subject"), ("_include", "Observation:performer")])
    assert response.json()["total"] == 3
    assert _refs(response) == set()


def test_filtered_policy_includes_only_what_it_could_read(client, world, project1):
    """A client policy reading Observations of everyone but only Alice's Patient."""
    policy = AccessPolicyFactory(project=project1, resources=[
        {"resourceType": "Observation", "interaction": ["read", "search"]},
        {"resourceType": "Patient", "criteria": f"Patient?_id={world['A'].split('/')[1]}",
         "interaction": ["read", "search"]},
    ])
    api = Api(client, mint(client=ClientApplicationFactory(project=project1, access_policy=policy)))
    response = api.get("/Observation", [("_include", "Observation:subject"), ("_include", "Observation:performer")])
    assert _refs(response) == {world["A"]}
    assert api.get(f"/Patient/{world['B'].split('/')[1]}").status_code == 404  # the same rule as a read


def test_project_2_client_never_includes_project_1(client, world, app2, project2):
    """Project 2's observation names Carol; a reference to a project-1 id stays unresolved."""
    seed(project2, observation(world["carol"].profile, performer=[{"reference": world["A"]}]))
    api = Api(client, mint(client=app2, scope="system/*.rs"))
    response = api.get("/Observation", [("_include", "Observation:subject"), ("_include", "Observation:performer")])
    assert _refs(response) == {world["C"]}
    found = {Resource.objects.get(resource_type=e["resource"]["resourceType"], resource_id=e["resource"]["id"],
                                  project=project2).project_id for e in response.json()["entry"]}
    assert found == {project2.pk}


def test_included_resources_lose_hidden_fields(client, world, project1):
    policy = AccessPolicyFactory(project=project1, resources=[
        {"resourceType": "Observation"},
        {"resourceType": "Patient", "hiddenFields": ["identifier"]},
    ])
    member = MembershipFactory(project=project1, profile_type="Practitioner", access_policy=policy)
    api = Api(client, mint(client=ClientApplicationFactory(project=project1), membership=member))
    includes = _entries(api.get("/Observation", {"_include": "Observation:subject"}), "include")
    assert {e["resource"]["id"] for e in includes} == {world["A"].split("/")[1], world["B"].split("/")[1]}
    assert all("identifier" not in e["resource"] for e in includes)


def test_including_through_a_hidden_reference_is_403(client, world, project1):
    """Including by a hidden element would reveal what it refers to."""
    policy = AccessPolicyFactory(project=project1, resources=[
        {"resourceType": "Observation", "hiddenFields": ["performer"]},
        {"resourceType": "Patient"},
    ])
    member = MembershipFactory(project=project1, profile_type="Practitioner", access_policy=policy)
    api = Api(client, mint(client=ClientApplicationFactory(project=project1), membership=member))
    assert_outcome(api.get("/Observation", {"_include": "Observation:performer"}), 403, "forbidden")
    # The same answer when nothing matches: the outcome does not depend on the data.
    assert_outcome(api.get("/Observation", {"_include": "Observation:performer", "code": "none"}), 403, "forbidden")
    assert _refs(api.get("/Observation", {"_include": "Observation:subject"})) == {world["A"], world["B"]}


def test_capability_statement_lists_every_include_and_each_works(anonymous, full_api):
    resources = {r["type"]: r for r in anonymous.get("/metadata").json()["rest"][0]["resource"]}
    observation_includes = resources["Observation"]["searchInclude"]
    assert {"Observation:subject", "Observation:patient", "Observation:performer"} <= set(observation_includes)
    assert "Observation:code" not in observation_includes
    for resource_type, resource in resources.items():
        for value in resource["searchInclude"]:
            assert full_api.get(f"/{resource_type}", {"_include": value}).status_code == 200, value
