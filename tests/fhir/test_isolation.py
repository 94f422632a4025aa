"""Enforcement: projects never mix, patient A never reaches patient B, policies and scopes hold.

medplum.md §3.3: a forbidden type or interaction is 403; an allowed type's resource outside the
policy is 404 (indistinguishable from missing); search results are filtered in the query,
before counting and paging; writes are checked on the old and the new version.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_api.models import Resource
from fhir_api.repository import Repository
from tests.factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory
from tests.fhir.conftest import Api, assert_outcome, condition, mint, observation, seed

pytestmark = pytest.mark.django_db


def _data(project: Any, membership: Any) -> dict[str, str]:
    """A patient's Observation and Condition, each updated once (two versions), by type."""
    repo = Repository(project.pk, None)
    out = {"Patient": membership.profile_id}
    for content in (observation(membership.profile), condition(membership.profile)):
        row = repo.create(content["resourceType"], content)
        repo.update(row.resource_type, row.resource_id, {**row.content, "note": [{"text": "second version"}]})
        out[row.resource_type] = row.resource_id
    return out


@pytest.fixture
def world(client, project1, project2, app1, app2, alice, bob):
    """Project 1: patients A (alice) and B (bob); project 2: patient C (carol). Each with data."""
    carol = MembershipFactory(project=project2, profile_type="Patient")
    seed(project2, {"resourceType": "Patient", "name": [{"family": "Carter"}]}, resource_id=carol.profile_id)
    return {"A": _data(project1, alice), "B": _data(project1, bob), "C": _data(project2, carol),
            "alice": alice, "bob": bob, "carol": carol}


# Patient-A tokens: the policy alone, the policy with v2 patient scopes, with v1 scopes, with user scopes.
PATIENT_SCOPES = ["openid", "openid patient/*.rs", "openid patient/*.read", "openid user/*.rs",
                  "patient/Observation.rs patient/Condition.rs patient/Patient.rs"]
ROUTES = ["read", "vread", "history", "search", "search_by_id", "search_by_subject", "update", "patch", "delete"]


def _attempt(api: Api, route: str, resource_type: str, resource_id: str, owner: str) -> Any:
    path = f"/{resource_type}/{resource_id}"
    if route == "read":
        return api.get(path)
    if route == "vread":
        return api.get(f"{path}/_history/1")
    if route == "history":
        return api.get(f"{path}/_history")
    if route == "search":
        return api.get(f"/{resource_type}")
    if route == "search_by_id":
        return api.get(f"/{resource_type}", {"_id": resource_id})
    if route == "search_by_subject":
        params = {"_id": resource_id} if resource_type == "Patient" else {"subject": owner}
        return api.get(f"/{resource_type}", params)
    body = Resource.objects.get(resource_id=resource_id).content
    if route == "update":
        return api.put(path, {**body, "status": "amended"} if resource_type == "Observation" else body)
    if route == "patch":
        return api.patch(path, [{"op": "add", "path": "/language", "value": "en"}])
    return api.delete(path)


def _ids(response: Any) -> set[str]:
    return {e["resource"]["id"] for e in response.json().get("entry", [])}


@pytest.mark.parametrize("scope", PATIENT_SCOPES)
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("resource_type", ["Patient", "Observation", "Condition"])
def test_patient_a_never_reaches_patient_b(client, world, app1, scope, route, resource_type):
    api = Api(client, mint(client=app1, membership=world["alice"], scope=scope))
    for other in ("B", "C"):  # the other patient of the project, and a patient of another project
        resource_id = world[other][resource_type]
        before = Resource.objects.get(resource_id=resource_id)
        owner = f"Patient/{world[other]['Patient']}"
        response = _attempt(api, route, resource_type, resource_id, owner)
        if route.startswith("search"):
            assert response.status_code == 200, response.content
            assert resource_id not in _ids(response)
            assert response.json()["total"] == len(_ids(response))  # B is not counted either
        elif route in ("update", "patch", "delete") and scope != "openid":
            # read-only scopes: the interaction itself is forbidden, whatever the resource
            assert_outcome(response, 403, "forbidden")
        else:
            assert_outcome(response, 404, "not-found")
        after = Resource.objects.get(resource_id=resource_id)
        assert (after.version_id, after.content, after.deleted) == (before.version_id, before.content, before.deleted)


@pytest.mark.parametrize("scope", PATIENT_SCOPES)
@pytest.mark.parametrize("resource_type", ["Patient", "Observation", "Condition"])
def test_patient_a_reaches_her_own_data(client, world, app1, scope, resource_type):
    api = Api(client, mint(client=app1, membership=world["alice"], scope=scope))
    resource_id = world["A"][resource_type]
    assert api.get(f"/{resource_type}/{resource_id}").status_code == 200
    assert api.get(f"/{resource_type}/{resource_id}/_history/1").status_code == 200
    assert api.get(f"/{resource_type}/{resource_id}/_history").status_code == 200
    bundle = api.get(f"/{resource_type}").json()
    assert _ids(bundle_response := api.get(f"/{resource_type}")) == {resource_id}, bundle_response.content
    assert bundle["total"] == 1


def test_search_is_filtered_before_paging(client, world, app1, project1):
    """B's many resources neither fill A's pages nor count in A's total."""
    for n in range(30):
        seed(project1, observation(world["bob"].profile, code=f"b{n}"))
    for n in range(3):
        seed(project1, observation(world["alice"].profile, code=f"a{n}"))
    api = Api(client, mint(client=app1, membership=world["alice"], scope="openid patient/*.rs"))
    bundle = api.get("/Observation", {"_count": 2}).json()
    assert bundle["total"] == 4
    assert len(bundle["entry"]) == 2
    assert all(e["resource"]["subject"]["reference"] == world["alice"].profile for e in bundle["entry"])
    assert api.get("/Observation", {"_summary": "count"}).json()["total"] == 4


def test_forbidden_type_and_interaction_are_403(client, world, app1, project1):
    encounter = seed(project1, {"resourceType": "Encounter", "status": "finished",
                                "class": {"code": "AMB"}, "subject": {"reference": world["alice"].profile}})
    api = Api(client, mint(client=app1, membership=world["alice"]))
    for response in (api.get("/Encounter"), api.get(f"/Encounter/{encounter['id']}"),
                     api.get(f"/Encounter/{encounter['id']}/_history"),
                     api.post("/Encounter", {**encounter, "id": None})):
        body = assert_outcome(response, 403, "forbidden")
        assert body["id"] == "forbidden"
    read_only = Api(client, mint(client=app1, membership=world["alice"], scope="patient/*.rs"))
    assert_outcome(read_only.post("/Observation", observation(world["alice"].profile)), 403, "forbidden")
    own = world["A"]["Observation"]
    assert_outcome(read_only.delete(f"/Observation/{own}"), 403, "forbidden")
    assert Resource.objects.get(resource_id=own).deleted is False


def test_patient_scope_without_patient_context_grants_nothing(client, world, app1, practitioner):
    api = Api(client, mint(client=app1, membership=practitioner, scope="openid patient/*.rs"))
    assert_outcome(api.get(f"/Observation/{world['A']['Observation']}"), 403, "forbidden")
    assert_outcome(api.get("/Observation"), 403, "forbidden")


def test_patient_scopes_confine_a_patient_without_policy(client, world, app1, project1):
    """A Patient member without a policy has full project access (Medplum's legacy default);
    ``patient/`` scopes confine her token to her compartment all the same."""
    dora = MembershipFactory(project=project1, profile_type="Patient")
    seed(project1, {"resourceType": "Patient", "name": [{"family": "Dora"}]}, resource_id=dora.profile_id)
    own = seed(project1, observation(dora.profile))["id"]
    api = Api(client, mint(client=app1, membership=dora, scope="openid patient/*.rs"))
    assert api.get(f"/Observation/{own}").status_code == 200
    assert_outcome(api.get(f"/Observation/{world['A']['Observation']}"), 404, "not-found")
    assert_outcome(api.get(f"/Patient/{world['A']['Patient']}"), 404, "not-found")
    assert _ids(api.get("/Observation")) == {own}
    assert _ids(api.get("/Patient")) == {dora.profile_id}
    unscoped = Api(client, mint(client=app1, membership=dora, scope="openid"))
    assert unscoped.get(f"/Observation/{world['A']['Observation']}").status_code == 200


def test_scope_constraints_are_anded(client, world, app1, project1):
    """SMART v2 ``?param=value`` constraints narrow what the policy allows."""
    vital = seed(project1, observation(world["alice"].profile, category=[
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                     "code": "vital-signs"}]}]))["id"]
    scope = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
    api = Api(client, mint(client=app1, membership=world["alice"], scope=scope))
    assert _ids(api.get("/Observation")) == {vital}
    assert_outcome(api.get(f"/Observation/{world['A']['Observation']}"), 404, "not-found")


@pytest.mark.parametrize("route", ROUTES)
def test_client_of_project_1_never_sees_project_2(client, world, app1, route):
    api = Api(client, mint(client=app1, scope="system/*.cruds"))
    for resource_type in ("Patient", "Observation", "Condition"):
        resource_id = world["C"][resource_type]
        before = Resource.objects.get(resource_id=resource_id)
        response = _attempt(api, route, resource_type, resource_id, f"Patient/{world['C']['Patient']}")
        if route.startswith("search"):
            assert resource_id not in _ids(response)
            found_projects = set(Resource.objects.filter(resource_id__in=_ids(response))
                                 .values_list("project_id", flat=True))
            assert found_projects <= {app1.project_id}
        else:
            assert_outcome(response, 404, "not-found")
        after = Resource.objects.get(resource_id=resource_id)
        assert (after.version_id, after.deleted) == (before.version_id, before.deleted)


def test_same_id_in_two_projects_stays_apart(client, project1, project2, app1, app2):
    seed(project1, {"resourceType": "Organization", "name": "One"}, resource_id="shared")
    seed(project2, {"resourceType": "Organization", "name": "Two"}, resource_id="shared")
    one, two = Api(client, mint(client=app1)), Api(client, mint(client=app2))
    assert one.get("/Organization/shared").json()["name"] == "One"
    assert two.get("/Organization/shared").json()["name"] == "Two"
    assert one.get("/Organization", {"name": "two"}).json()["total"] == 0
    one.delete("/Organization/shared")
    assert two.get("/Organization/shared").status_code == 200


def test_client_policy_applies_to_client_credentials(client, world, project1, app1):
    policy = AccessPolicyFactory(project=project1, resources=[
        {"resourceType": "Observation", "criteria": f"Observation?subject={world['alice'].profile}",
         "interaction": ["read", "search"]}])
    limited = ClientApplicationFactory(project=project1, access_policy=policy)
    api = Api(client, mint(client=limited))
    assert api.get(f"/Observation/{world['A']['Observation']}").status_code == 200
    assert_outcome(api.get(f"/Observation/{world['B']['Observation']}"), 404, "not-found")
    assert_outcome(api.get(f"/Patient/{world['A']['Patient']}"), 403, "forbidden")


# --- writes ------------------------------------------------------------------------------------

@pytest.fixture
def alice_api(client, world, app1):
    """Patient A with the demo-style policy and no scope restriction: every interaction, filtered."""
    return Api(client, mint(client=app1, membership=world["alice"]))


def test_create_inside_the_policy_only(alice_api, world):
    assert alice_api.post("/Observation", observation(world["alice"].profile)).status_code == 201
    count = Resource.objects.count()
    assert_outcome(alice_api.post("/Observation", observation(world["bob"].profile)), 403, "forbidden")
    assert_outcome(alice_api.post("/Observation", {**observation(world["alice"].profile), "subject": None}), 400,
                   "invalid")
    no_subject = observation(world["alice"].profile)
    del no_subject["subject"]
    assert_outcome(alice_api.post("/Observation", no_subject), 403, "forbidden")
    # Patient?_id=%patient.id: a new Patient never has her id.
    assert_outcome(alice_api.post("/Patient", {"resourceType": "Patient"}), 403, "forbidden")
    assert Resource.objects.count() == count


def test_update_moving_a_resource_out_of_the_policy_is_403(alice_api, world):
    own = world["A"]["Observation"]
    current = alice_api.get(f"/Observation/{own}").json()
    moved = {**current, "subject": {"reference": world["bob"].profile}}
    assert_outcome(alice_api.put(f"/Observation/{own}", moved), 403, "forbidden")
    stored = Resource.objects.get(resource_id=own)
    assert stored.content["subject"]["reference"] == world["alice"].profile and stored.version_id == 2
    assert alice_api.put(f"/Observation/{own}", {**current, "status": "amended"}).status_code == 200


def test_update_and_delete_of_others_data_is_404(alice_api, world):
    theirs = world["B"]["Observation"]
    body = {**Resource.objects.get(resource_id=theirs).content, "subject": {"reference": world["alice"].profile}}
    assert_outcome(alice_api.put(f"/Observation/{theirs}", body), 404, "not-found")  # not even to take it over
    assert_outcome(alice_api.delete(f"/Observation/{theirs}"), 404, "not-found")
    assert_outcome(alice_api.put(f"/Observation/{theirs}", body, HTTP_IF_MATCH='W/"1"'), 404, "not-found")
    stored = Resource.objects.get(resource_id=theirs)
    assert stored.content["subject"]["reference"] == world["bob"].profile and not stored.deleted


def test_readable_but_not_writable_is_403(client, world, project1, app1):
    policy = AccessPolicyFactory(project=project1, resources=[
        {"resourceType": "Observation", "interaction": ["read", "search"]},
        {"resourceType": "Observation", "criteria": f"Observation?subject={world['alice'].profile}",
         "interaction": ["update"]},
    ])
    member = MembershipFactory(project=project1, profile_type="Practitioner", access_policy=policy)
    api = Api(client, mint(client=app1, membership=member))
    theirs = world["B"]["Observation"]
    body = Resource.objects.get(resource_id=theirs).content
    assert_outcome(api.put(f"/Observation/{theirs}", body), 403, "forbidden")
    assert api.put(f"/Observation/{world['A']['Observation']}",
                   Resource.objects.get(resource_id=world["A"]["Observation"]).content).status_code == 200


def test_own_delete_and_update_of_self(alice_api, world):
    own = world["A"]["Condition"]
    assert alice_api.delete(f"/Condition/{own}").status_code == 200
    me = alice_api.get(f"/Patient/{world['A']['Patient']}").json()
    updated = alice_api.put(f"/Patient/{me['id']}", {**me, "gender": "female"})
    assert updated.status_code == 200 and updated.json()["gender"] == "female"


def test_versions_from_before_a_move_stay_hidden(client, world, app1, full_api):
    """B's observation moved to A by a practitioner: A sees the new version, never B's old one."""
    theirs = world["B"]["Observation"]
    body = full_api.get(f"/Observation/{theirs}").json()
    assert full_api.put(f"/Observation/{theirs}", {**body, "subject": {"reference": world["alice"].profile}}
                        ).status_code == 200
    api = Api(client, mint(client=app1, membership=world["alice"], scope="patient/*.rs"))
    assert api.get(f"/Observation/{theirs}").status_code == 200
    assert api.get(f"/Observation/{theirs}/_history/3").status_code == 200
    assert_outcome(api.get(f"/Observation/{theirs}/_history/1"), 404, "not-found")
    assert_outcome(api.get(f"/Observation/{theirs}/_history/2"), 404, "not-found")
    history = api.get(f"/Observation/{theirs}/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["3"]
    assert history["total"] == 1


# --- fields ------------------------------------------------------------------------------------

@pytest.fixture
def fields_api(client, project1, app1):
    policy = AccessPolicyFactory(project=project1, resources=[
        {"resourceType": "Patient", "hiddenFields": ["birthDate", "telecom.value"],
         "readonlyFields": ["identifier", "name.family"]},
    ])
    member = MembershipFactory(project=project1, profile_type="Practitioner", access_policy=policy)
    return Api(client, mint(client=app1, membership=member))


@pytest.fixture
def pat(project1):
    return seed(project1, {"resourceType": "Patient", "birthDate": "1970-01-01",
                           "identifier": [{"system": "urn:mrn", "value": "X-1"}],
                           "name": [{"family": "Fixed", "given": ["Free"]}],
                           "telecom": [{"system": "phone", "value": "555-0100"}], "gender": "other"})


def test_hidden_fields_are_removed_everywhere(fields_api, pat):
    path = f"/Patient/{pat['id']}"
    for body in (fields_api.get(path).json(), fields_api.get(f"{path}/_history/1").json(),
                 fields_api.get(f"{path}/_history").json()["entry"][0]["resource"],
                 fields_api.get("/Patient").json()["entry"][0]["resource"]):
        assert "birthDate" not in body
        assert body["telecom"] == [{"system": "phone"}]
        assert body["identifier"] == pat["identifier"]


def test_hidden_fields_cannot_be_searched_by(fields_api, pat):
    """Searching by a hidden element would reveal its value one guess at a time."""
    assert_outcome(fields_api.get("/Patient", {"birthdate": "1970-01-01"}), 403, "forbidden")
    assert fields_api.get("/Patient", {"family": "fix"}).json()["total"] == 1  # read-only, not hidden


def test_readonly_and_hidden_fields_are_preserved_on_update(fields_api, pat, project1):
    path = f"/Patient/{pat['id']}"
    current = fields_api.get(path).json()  # without birthDate and telecom.value
    changed = {**current, "identifier": [{"system": "urn:mrn", "value": "HACKED"}],
               "name": [{"family": "Changed", "given": ["Free"]}], "gender": "female"}
    response = fields_api.put(path, changed)
    assert response.status_code == 200, response.content
    stored = Resource.objects.get(resource_id=pat["id"]).content
    assert stored["identifier"] == pat["identifier"]
    assert stored["name"][0]["family"] == "Fixed"
    assert stored["birthDate"] == "1970-01-01" and stored["telecom"][0]["value"] == "555-0100"
    assert stored["gender"] == "female"  # other elements change as usual
    assert "birthDate" not in response.json()


def test_readonly_fields_are_dropped_on_create(fields_api):
    response = fields_api.post("/Patient", {"resourceType": "Patient", "identifier": [{"value": "MINE"}],
                                            "birthDate": "2000-01-01", "gender": "male"})
    assert response.status_code == 201
    stored = Resource.objects.get(resource_id=response.json()["id"]).content
    assert "identifier" not in stored and "birthDate" not in stored and stored["gender"] == "male"
