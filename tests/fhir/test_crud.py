"""FHIR REST interactions: create, read, update (If-Match), delete, history, vread, validation, errors."""

from __future__ import annotations

import json

import pytest

from fhir_api.models import Resource, ResourceVersion, SearchIndex
from tests.fhir.conftest import FHIR, FHIR_JSON, Api, assert_outcome, mint, observation

pytestmark = pytest.mark.django_db

BASE = "http://127.0.0.1:8000/fhir/R4"


def test_create_returns_201_with_location_etag_and_meta(full_api, alice):
    response = full_api.post("/Observation", {**observation(alice.profile), "id": "client-chosen",
                                              "meta": {"versionId": "99", "tag": [{"code": "t"}]}})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"] != "client-chosen"  # FHIR R4 §3.1.0.8: the server assigns the id
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert body["meta"]["tag"] == [{"code": "t"}]
    assert response["Location"] == f"{BASE}/Observation/{body['id']}/_history/1"
    assert response["ETag"] == 'W/"1"'
    assert response["Content-Type"] == "application/fhir+json; charset=utf-8"
    row = Resource.objects.get(resource_id=body["id"])
    assert row.project_id == alice.project_id and row.patient == alice.profile
    assert set(SearchIndex.objects.filter(resource=row, name="code").values_list("value", flat=True)) == {
        "8867-4", "http://loinc.org|8867-4"}


def test_read_returns_the_stored_resource(full_api, alice):
    response = full_api.get(f"/Patient/{alice.profile_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == alice.profile_id and body["name"][0]["family"] == "Anders"
    assert response["ETag"] == 'W/"1"'
    assert response["Last-Modified"]


def test_plain_json_is_accepted_and_served(full_api, alice):
    response = full_api.post("/Observation", observation(alice.profile), content_type="application/json",
                             HTTP_ACCEPT="application/json")
    assert response.status_code == 201
    assert response["Content-Type"] == "application/json"
    assert full_api.get(f"/Patient/{alice.profile_id}", HTTP_ACCEPT="text/html")["Content-Type"].startswith(
        FHIR_JSON)


def test_update_versions_and_if_match(full_api, alice):
    created = full_api.post("/Observation", observation(alice.profile)).json()
    path = f"/Observation/{created['id']}"
    updated = full_api.put(path, {**created, "status": "amended"}, HTTP_IF_MATCH='W/"1"')
    assert updated.status_code == 200, updated.content
    assert updated.json()["meta"]["versionId"] == "2"
    assert updated["ETag"] == 'W/"2"'
    stale = full_api.put(path, {**created, "status": "corrected"}, HTTP_IF_MATCH='W/"1"')
    assert_outcome(stale, 412, "conflict")
    assert full_api.get(path).json()["status"] == "amended"
    without_precondition = full_api.put(path, {**created, "status": "corrected"})
    assert without_precondition.json()["meta"]["versionId"] == "3"
    assert ResourceVersion.objects.filter(resource__resource_id=created["id"]).count() == 3


def test_update_reindexes(full_api, alice, bob):
    created = full_api.post("/Observation", observation(alice.profile)).json()
    full_api.put(f"/Observation/{created['id']}", {**created, "subject": {"reference": bob.profile}})
    row = Resource.objects.get(resource_id=created["id"])
    assert row.patient == bob.profile
    assert list(SearchIndex.objects.filter(resource=row, name="subject").values_list("value", flat=True)) == [
        bob.profile]


def test_update_of_missing_resource_is_404(full_api):
    body = observation("Patient/x", id="nope")
    assert_outcome(full_api.put("/Observation/nope", body), 404, "not-found")


@pytest.mark.parametrize("body_id", [None, "other"])
def test_update_id_must_match_url(full_api, alice, body_id):
    created = full_api.post("/Observation", observation(alice.profile)).json()
    body = {**created}
    body.pop("id")
    if body_id:
        body["id"] = body_id
    assert_outcome(full_api.put(f"/Observation/{created['id']}", body), 400, "invalid", "Observation.id")


def test_resource_type_must_match_url(full_api, alice):
    assert_outcome(full_api.post("/Condition", observation(alice.profile)), 400, "invalid", "Condition.resourceType")


def test_delete_then_read_is_410_and_history_keeps_versions(full_api, alice):
    created = full_api.post("/Observation", observation(alice.profile)).json()
    path = f"/Observation/{created['id']}"
    response = full_api.delete(path)
    assert response.status_code == 200
    assert response.json()["issue"][0]["code"] == "informational"
    assert_outcome(full_api.get(path), 410, "deleted")
    assert full_api.get("/Observation", {"_id": created["id"]}).json()["total"] == 0
    history = full_api.get(f"{path}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert_outcome(full_api.get(f"{path}/_history/2"), 410, "deleted")
    assert full_api.delete(path).status_code == 200  # idempotent


def test_delete_with_stale_if_match_is_412(full_api, alice):
    created = full_api.post("/Observation", observation(alice.profile)).json()
    full_api.put(f"/Observation/{created['id']}", created)
    assert_outcome(full_api.delete(f"/Observation/{created['id']}", HTTP_IF_MATCH='W/"1"'), 412, "conflict")


def test_history_and_vread(full_api, alice):
    created = full_api.post("/Observation", observation(alice.profile)).json()
    path = f"/Observation/{created['id']}"
    full_api.put(path, {**created, "status": "amended"})
    history = full_api.get(f"{path}/_history")
    assert history.status_code == 200
    bundle = history.json()
    assert bundle["type"] == "history" and bundle["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["2", "1"]
    assert [e["response"]["etag"] for e in bundle["entry"]] == ['W/"2"', 'W/"1"']
    first = full_api.get(f"{path}/_history/1")
    assert first.status_code == 200 and first.json()["status"] == "final"
    assert first["ETag"] == 'W/"1"'
    assert full_api.get(f"{path}/_history/2").json()["status"] == "amended"
    assert_outcome(full_api.get(f"{path}/_history/3"), 404, "not-found")
    assert_outcome(full_api.get(f"{path}/_history/abc"), 404, "not-found")
    paged = full_api.get(f"{path}/_history", {"_count": 1}).json()
    assert len(paged["entry"]) == 1 and any(link["relation"] == "next" for link in paged["link"])


@pytest.mark.parametrize(("body", "expression"), [
    ({"resourceType": "Patient", "birthDate": "not-a-date"}, "Patient.birthDate"),
    ({"resourceType": "Patient", "name": [{"family": 3}]}, "Patient.name[0].family"),
    ({"resourceType": "Patient", "unknownElement": 1}, "Patient.unknownElement"),
    ({"resourceType": "Patient", "active": "yes please"}, "Patient.active"),
])
def test_invalid_resources_name_the_failing_element(full_api, body, expression):
    assert_outcome(full_api.post("/Patient", body), 400, "invalid", expression)
    assert not Resource.objects.filter(resource_type="Patient").exists()


def test_missing_required_and_choice_errors(full_api, alice):
    missing = {"resourceType": "Observation", "status": "final", "subject": {"reference": alice.profile}}
    assert_outcome(full_api.post("/Observation", missing), 400, "invalid", "Observation.code")
    two_values = {**observation(alice.profile), "valueString": "a", "valueBoolean": True}
    assert_outcome(full_api.post("/Observation", two_values), 400, "invalid", "Observation.value[x]")


def test_invalid_update_keeps_the_current_version(full_api, alice):
    created = full_api.post("/Observation", observation(alice.profile)).json()
    bad = {**created, "status": 5}
    assert_outcome(full_api.put(f"/Observation/{created['id']}", bad), 400, "invalid", "Observation.status")
    assert full_api.get(f"/Observation/{created['id']}").json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize("body", ["{not json", "[]", '"text"'])
def test_malformed_bodies_are_400(full_api, body):
    response = full_api.post("/Patient", body)
    assert_outcome(response, 400, "invalid")


def test_form_bodies_are_415(full_api):
    response = full_api.post("/Patient", "resourceType=Patient", content_type="application/x-www-form-urlencoded")
    assert_outcome(response, 415, "not-supported")


def test_unknown_type_is_404(full_api):
    assert_outcome(full_api.get("/Spaceship"), 404, "not-found")
    assert_outcome(full_api.get("/Spaceship/1"), 404, "not-found")
    assert_outcome(full_api.post("/Spaceship", {"resourceType": "Spaceship"}), 404, "not-found")
    assert_outcome(full_api.get("/Patient/not a valid id"), 404, "not-found")
    assert_outcome(full_api.get("/patient/lowercase/x/y/z"), 404, "not-found")


@pytest.mark.parametrize("path", ["/Patient/not,an,id", "/0/1/_history", "/patient/lowercase/x/y/z"])
def test_options_of_an_unknown_path_is_404(full_api, path):
    """Issue 13 (schemathesis): OPTIONS answered 200 with DRF's description of the catch-all view."""
    response = full_api.options(path)
    body = assert_outcome(response, 404, "not-found")
    assert "description" not in body and "renders" not in body
    assert "Allow" not in response  # DRF listed every method for a path that has no resource


@pytest.mark.parametrize("method", ["TRACE", "QUERY", "HEAD", "PATCH"])
def test_any_method_on_an_unknown_path_is_404(full_api, method):
    """Issue 13 (schemathesis): TRACE or QUERY was a 405 without the Allow header RFC 9110 requires of one."""
    response = full_api.client.generic(method, "/fhir/R4/AuditEvent/null,null",
                                       HTTP_AUTHORIZATION=f"Bearer {full_api.token}")
    assert response.status_code == 404
    assert "Allow" not in response
    if method != "HEAD":
        assert response.json()["issue"][0]["code"] == "not-found"


def test_missing_resource_is_404(full_api):
    body = assert_outcome(full_api.get("/Patient/does-not-exist"), 404, "not-found")
    assert body["id"] == "not-found"


def test_unsupported_method_is_405(full_api, alice):
    for response in (full_api.patch("/Patient", []),
                     full_api.post(f"/Patient/{alice.profile_id}", {"resourceType": "Patient"})):
        assert_outcome(response, 405, "not-supported")
    # PUT on the type is a conditional update: without search criteria it is a 400, not a 405.
    assert_outcome(full_api.put("/Patient", {"resourceType": "Patient"}), 400, "invalid")


@pytest.mark.spec("RFC 6750 §3")
def test_unauthenticated_is_401_operation_outcome(anonymous, alice):
    for response in (anonymous.get("/Patient"), anonymous.get(f"/Patient/{alice.profile_id}"),
                     anonymous.post("/Patient", {"resourceType": "Patient"}), anonymous.get("/Spaceship")):
        body = assert_outcome(response, 401, "login")
        assert body["id"] == "unauthorized"
        assert response["WWW-Authenticate"] == 'Bearer realm="http://127.0.0.1:8000"'


@pytest.mark.spec("RFC 6750 §3.1")
def test_invalid_tokens_are_401_with_invalid_token(client, app1, alice):
    for token in ("garbage", "a.b.c"):
        response = Api(client, token).get("/Patient")
        assert_outcome(response, 401, "login")
        assert response["WWW-Authenticate"].startswith('Bearer realm="http://127.0.0.1:8000", error="invalid_token"')
    basic = client.get(f"{FHIR}/Patient", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz")
    assert_outcome(basic, 401, "login")


@pytest.mark.spec("RFC 8725 §2.8")
def test_id_token_is_not_an_access_token(client, app1, alice):
    from django.utils import timezone

    from medplum_auth import tokens

    now = int(timezone.now().timestamp())
    access = mint(client=app1, membership=alice)
    claims = tokens.verify_access_token(access)
    id_token = tokens.sign({**claims, "aud": app1.client_id, "iat": now, "exp": now + 300}, tokens.ID_TOKEN_TYPE)
    assert_outcome(Api(client, id_token).get(f"/Patient/{alice.profile_id}"), 401, "login")
    same_claims_as_id_token = tokens.sign(claims, tokens.ID_TOKEN_TYPE)
    assert_outcome(Api(client, same_claims_as_id_token).get(f"/Patient/{alice.profile_id}"), 401, "login")


def test_expired_and_revoked_tokens_are_401(client, app1, alice):
    from django.utils import timezone

    from medplum_auth.models import Login

    expired = mint(client=app1, membership=alice, lifetime=-3600)
    assert_outcome(Api(client, expired).get("/Patient"), 401, "login")
    token = mint(client=app1, membership=alice)
    assert Api(client, token).get("/Patient").status_code == 200
    Login.objects.filter(membership=alice).update(revoked_at=timezone.now())
    assert_outcome(Api(client, token).get("/Patient"), 401, "login")


def test_metadata_is_public_with_smart_oauth_uris(anonymous):
    response = anonymous.get("/metadata")
    assert response.status_code == 200
    body = response.json()
    assert body["resourceType"] == "CapabilityStatement" and body["fhirVersion"] == "4.0.1"
    rest = body["rest"][0]
    extension = rest["security"]["extension"][0]
    assert extension["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    uris = {e["url"]: e["valueUri"] for e in extension["extension"]}
    assert uris == {"authorize": "http://127.0.0.1:8000/oauth2/authorize",
                    "token": "http://127.0.0.1:8000/oauth2/token",
                    "introspect": "http://127.0.0.1:8000/oauth2/introspect",
                    "revoke": "http://127.0.0.1:8000/oauth2/revoke"}
    types = {r["type"]: r for r in rest["resource"]}
    assert {"Patient", "Practitioner", "RelatedPerson", "Organization", "Encounter", "Observation", "Condition",
            "AllergyIntolerance", "MedicationRequest", "Immunization", "Procedure", "DiagnosticReport",
            "DocumentReference", "CarePlan"} <= set(types)
    params = {p["name"]: p["type"] for p in types["Observation"]["searchParam"]}
    assert params["subject"] == "reference" and params["code"] == "token" and params["date"] == "date"


def test_capability_statement_is_valid_r4b(anonymous):
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    CapabilityStatement.model_validate(anonymous.get("/metadata").json())


@pytest.mark.spec("SMART App Launch 2.2 §2.1")
@pytest.mark.parametrize("path", ["/.well-known/smart-configuration", "/fhir/R4/.well-known/smart-configuration"])
def test_smart_configuration(client, path):
    response = client.get(path, HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Access-Control-Allow-Origin"] == "*"
    body = response.json()
    for key in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "grant_types_supported",
                "token_endpoint_auth_methods_supported", "scopes_supported", "response_types_supported",
                "capabilities", "code_challenge_methods_supported", "introspection_endpoint",
                "revocation_endpoint"):
        assert body[key], key
    assert body["issuer"] == "http://127.0.0.1:8000"
    assert body["response_types_supported"] == ["code"]
    assert body["code_challenge_methods_supported"] == ["S256"]
    assert "authorization_code" in body["grant_types_supported"]
    # Only what works (tests/oauth/test_smart_launch.py): no standalone encounter picker.
    assert "context-standalone-encounter" not in body["capabilities"]
    assert {"launch-ehr", "context-style", "context-ehr-patient", "context-ehr-encounter",
            "launch-standalone", "client-public", "client-confidential-symmetric", "sso-openid-connect",
            "context-standalone-patient", "permission-patient", "permission-v1", "permission-v2"} <= set(
        body["capabilities"])


def test_smart_configuration_endpoints_exist(client):
    body = client.get("/.well-known/smart-configuration").json()
    assert client.get(body["jwks_uri"].removeprefix("http://127.0.0.1:8000")).status_code == 200
    openid = client.get("/.well-known/openid-configuration").json()
    for key in ("authorization_endpoint", "token_endpoint", "introspection_endpoint", "revocation_endpoint"):
        assert body[key] == openid[key], key


def test_responses_are_json_bodies(full_api, alice):
    response = full_api.get(f"/Patient/{alice.profile_id}")
    assert json.loads(response.content)["resourceType"] == "Patient"


@pytest.mark.parametrize(("if_match", "status"), [('W/"1"', 200), ('"1"', 200), ("1", 200), ("*", 200),
                                                  ('W/"2"', 412), ("garbage", 412)])
def test_if_match_forms(full_api, alice, if_match, status):
    created = full_api.post("/Observation", observation(alice.profile)).json()
    response = full_api.put(f"/Observation/{created['id']}", created, HTTP_IF_MATCH=if_match)
    assert response.status_code == status, response.content


@pytest.mark.parametrize("accept", [FHIR_JSON, "application/json"])
def test_read_and_search_serve_the_stored_json_unchanged(full_api, alice, accept):
    """Stored resources are served from their JSON text, not re-encoded: nothing may change on the way."""
    text = 'Zoë 日本 "quoted" back\\slash \u2028 tab\t 😀'
    created = full_api.post("/Observation", {**observation(alice.profile), "note": [{"text": text}],
                                             "valueQuantity": {"value": 0.1, "unit": "mg"}}).json()
    stored = Resource.objects.get(resource_id=created["id"]).content
    assert stored["note"][0]["text"] == text
    content_type = {FHIR_JSON: f"{FHIR_JSON}; charset=utf-8", "application/json": "application/json"}[accept]
    read = full_api.get(f"/Observation/{created['id']}", HTTP_ACCEPT=accept)
    assert read.status_code == 200 and read["Content-Type"] == content_type
    assert json.loads(read.content.decode("utf-8")) == stored == created
    search = full_api.get("/Observation", {"_id": created["id"], "_include": "Observation:subject"},
                          HTTP_ACCEPT=accept)
    assert search["Content-Type"] == content_type
    bundle = json.loads(search.content.decode("utf-8"))
    assert bundle["total"] == 1
    assert [(e["search"]["mode"], e["fullUrl"]) for e in bundle["entry"]] == [
        ("match", f"{BASE}/Observation/{created['id']}"), ("include", f"{BASE}/{alice.profile}")]
    assert bundle["entry"][0]["resource"] == stored
    assert bundle["entry"][1]["resource"] == Resource.objects.get(resource_id=alice.profile_id).content


@pytest.mark.parametrize(("family", "valid"), [("Lee\x00", False), ("Lee\x1b[31m", False), ("L\x7fee", True),
                                              ("Lee\tJr\r\n", True), ("Zoë", True)])
def test_control_characters_in_strings_are_400(full_api, family, valid):
    """FHIR ``string``: no control characters but tab, CR and LF (and PostgreSQL cannot store NUL)."""
    response = full_api.post("/Patient", {"resourceType": "Patient", "name": [{"family": family}]})
    if valid:
        assert response.status_code == 201, response.content
        assert response.json()["name"][0]["family"] == family
    else:
        assert_outcome(response, 400, "invalid", expression="Patient.name[0].family")
    bad_key = full_api.post("/Patient", {"resourceType": "Patient", "gen\x00der": "other"})
    assert_outcome(bad_key, 400, "invalid", expression="Patient")
