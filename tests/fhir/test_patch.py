"""PATCH with a JSON Patch (RFC 6902), as ``@medplum/core``'s ``patchResource`` sends it.

A patch is an update: the same version, validation and policy rules (isolation for every type and
token kind is in ``test_isolation_all_types.py``). What is particular to PATCH is here: the
document's errors, If-Match, and that a patch only ever sees what its caller may read.
"""

from __future__ import annotations

import pytest

from fhir_api.models import Resource, ResourceVersion, SearchIndex
from tests.factories import AccessPolicyFactory, MembershipFactory
from tests.fhir.conftest import FHIR_JSON, Api, assert_outcome, mint, observation, seed

pytestmark = pytest.mark.django_db


@pytest.fixture
def obs(full_api, alice):
    return full_api.post("/Observation", {**observation(alice.profile), "note": [{"text": "first"}]}).json()


def test_patch_stores_a_new_version(full_api, obs):
    path = f"/Observation/{obs['id']}"
    response = full_api.patch(path, [
        {"op": "test", "path": "/status", "value": "final"},
        {"op": "replace", "path": "/status", "value": "amended"},
        {"op": "add", "path": "/note/-", "value": {"text": "second"}},
        {"op": "remove", "path": "/code/text"},
    ], HTTP_IF_MATCH='W/"1"')
    assert response.status_code == 200, response.content
    assert response["ETag"] == 'W/"2"' and response["Content-Type"] == f"{FHIR_JSON}; charset=utf-8"
    body = response.json()
    assert body["status"] == "amended" and body["note"] == [{"text": "first"}, {"text": "second"}]
    assert "text" not in body["code"] and body["meta"]["versionId"] == "2"
    row = Resource.objects.get(resource_id=obs["id"])
    assert row.content == body and row.version_id == 2
    assert ResourceVersion.objects.filter(resource=row).count() == 2
    assert set(SearchIndex.objects.filter(resource=row, name="status").values_list("value", flat=True)) == {"amended"}
    assert full_api.get("/Observation", {"status": "amended"}).json()["total"] == 1


def test_stale_if_match_is_412_and_nothing_changes(full_api, obs):
    path = f"/Observation/{obs['id']}"
    assert full_api.patch(path, [{"op": "replace", "path": "/status", "value": "amended"}]).status_code == 200
    stale = full_api.patch(path, [{"op": "replace", "path": "/status", "value": "corrected"}], HTTP_IF_MATCH='W/"1"')
    assert_outcome(stale, 412, "conflict")
    assert Resource.objects.get(resource_id=obs["id"]).content["status"] == "amended"


@pytest.mark.parametrize(("document", "status", "code"), [
    ({"op": "replace", "path": "/status", "value": "x"}, 400, "invalid"),  # not an array
    ([["replace", "/status"]], 400, "invalid"),  # operations must be objects
    ([{"op": "frobnicate", "path": "/status"}], 400, "invalid"),
    ([{"path": "/status", "value": "x"}], 400, "invalid"),  # no op
    ([{"op": "replace", "value": "x"}], 400, "invalid"),  # no path
    ([{"op": "replace", "path": "status", "value": "x"}], 422, "processing"),  # not a JSON Pointer
    ([{"op": "test", "path": "/status", "value": "preliminary"}], 422, "processing"),
    ([{"op": "remove", "path": "/performer"}], 422, "processing"),  # nothing there
    ([{"op": "replace", "path": "/note/7/text", "value": "x"}], 422, "processing"),
    ([{"op": "add", "path": "/colour", "value": "blue"}], 400, "invalid"),  # not an Observation any more
    ([{"op": "replace", "path": "/id", "value": "another-id"}], 400, "invalid"),
    ([{"op": "replace", "path": "/resourceType", "value": "Condition"}], 400, "invalid"),
    ([{"op": "remove", "path": ""}], 422, "processing"),  # the whole resource
])
def test_bad_patches_are_refused_and_nothing_changes(full_api, obs, document, status, code):
    response = full_api.patch(f"/Observation/{obs['id']}", document)
    assert_outcome(response, status, code)
    row = Resource.objects.get(resource_id=obs["id"])
    assert (row.version_id, row.content) == (1, obs)


def test_invalid_resource_names_the_element(full_api, obs):
    response = full_api.patch(f"/Observation/{obs['id']}", [{"op": "replace", "path": "/status", "value": 7}])
    assert_outcome(response, 400, "invalid", expression="Observation.status")


@pytest.mark.parametrize("content_type", [FHIR_JSON, "application/json", "text/plain"])
def test_other_patch_formats_are_415(full_api, obs, content_type):
    """FHIRPath Patch (a Parameters resource) and plain JSON are not JSON Patch."""
    body = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Observation.status"},
        {"name": "value", "valueCode": "amended"}]}]}
    response = full_api.patch(f"/Observation/{obs['id']}", body, content_type=content_type)
    assert_outcome(response, 415, "not-supported")
    assert Resource.objects.get(resource_id=obs["id"]).version_id == 1


def test_missing_and_unknown_are_404(full_api):
    assert_outcome(full_api.patch("/Observation/does-not-exist", []), 404, "not-found")
    assert_outcome(full_api.patch("/Nope/x", []), 404, "not-found")


def test_read_only_scope_cannot_patch(client, app1, alice):
    own = seed(alice.project, observation(alice.profile))
    api = Api(client, mint(client=app1, membership=alice, scope="openid patient/*.rs"))
    assert_outcome(api.patch(f"/Observation/{own['id']}", [{"op": "replace", "path": "/status", "value": "amended"}]),
                   403, "forbidden")
    writer = Api(client, mint(client=app1, membership=alice, scope="openid patient/Observation.rsu"))
    assert writer.patch(f"/Observation/{own['id']}", [{"op": "replace", "path": "/status", "value": "amended"}]
                        ).status_code == 200


def test_patching_out_of_the_policy_is_403(client, app1, alice, bob):
    own = seed(alice.project, observation(alice.profile))
    api = Api(client, mint(client=app1, membership=alice))
    move = [{"op": "replace", "path": "/subject/reference", "value": bob.profile}]
    assert_outcome(api.patch(f"/Observation/{own['id']}", move), 403, "forbidden")
    assert Resource.objects.get(resource_id=own["id"]).content["subject"]["reference"] == alice.profile
    theirs = seed(bob.project, observation(bob.profile))
    take = [{"op": "replace", "path": "/subject/reference", "value": alice.profile}]
    assert_outcome(api.patch(f"/Observation/{theirs['id']}", take), 404, "not-found")
    assert Resource.objects.get(resource_id=theirs["id"]).content["subject"]["reference"] == bob.profile


@pytest.fixture
def fields_api(client, project1, app1):
    policy = AccessPolicyFactory(project=project1, resources=[
        {"resourceType": "Patient", "hiddenFields": ["birthDate"], "readonlyFields": ["identifier"]},
    ])
    member = MembershipFactory(project=project1, profile_type="Practitioner", access_policy=policy)
    return Api(client, mint(client=app1, membership=member))


def test_a_patch_sees_only_what_its_caller_may_read(fields_api, project1):
    """Hidden fields are not there to test, copy or change; read-only fields are put back."""
    pat = seed(project1, {"resourceType": "Patient", "birthDate": "1970-01-01", "gender": "female",
                          "identifier": [{"system": "urn:mrn", "value": "X-1"}]})
    path = f"/Patient/{pat['id']}"
    for probe in ("1970-01-01", "1999-12-31"):  # the right and a wrong guess answer alike
        assert_outcome(fields_api.patch(path, [{"op": "test", "path": "/birthDate", "value": probe}]), 422,
                       "processing")
    assert_outcome(fields_api.patch(path, [{"op": "copy", "from": "/birthDate", "path": "/gender"}]), 422,
                   "processing")
    response = fields_api.patch(path, [
        {"op": "add", "path": "/birthDate", "value": "2001-01-01"},
        {"op": "replace", "path": "/identifier/0/value", "value": "HACKED"},
        {"op": "replace", "path": "/gender", "value": "other"},
    ])
    assert response.status_code == 200, response.content
    assert "birthDate" not in response.json()
    stored = Resource.objects.get(resource_id=pat["id"]).content
    assert stored["birthDate"] == "1970-01-01" and stored["identifier"] == pat["identifier"]
    assert stored["gender"] == "other"


def test_writable_but_not_readable_cannot_patch(client, project1, app1, alice, bob):
    """A patch reads before it writes: without read access it could probe values with ``test``."""
    theirs = seed(project1, observation(bob.profile))
    policy = AccessPolicyFactory(project=project1, resources=[
        {"resourceType": "Observation", "interaction": ["update"]},
        {"resourceType": "Observation", "criteria": f"Observation?subject={alice.profile}", "interaction": ["read"]},
    ])
    member = MembershipFactory(project=project1, profile_type="Practitioner", access_policy=policy)
    api = Api(client, mint(client=app1, membership=member))
    probe = [{"op": "test", "path": "/status", "value": "final"}]
    assert_outcome(api.patch(f"/Observation/{theirs['id']}", probe), 403, "forbidden")
    no_read = AccessPolicyFactory(project=project1, resources=[{"resourceType": "Observation",
                                                                "interaction": ["update"]}])
    blind = Api(client, mint(client=app1, membership=MembershipFactory(
        project=project1, profile_type="Practitioner", access_policy=no_read)))
    assert_outcome(blind.patch(f"/Observation/{theirs['id']}", probe), 403, "forbidden")
    assert Resource.objects.get(resource_id=theirs["id"]).version_id == 1


def test_capability_statement_lists_patch(anonymous):
    statement = anonymous.get("/metadata").json()
    for resource in statement["rest"][0]["resource"]:
        if resource["type"] != "AuditEvent":  # read-only
            assert {"code": "patch"} in resource["interaction"], resource["type"]
