"""Every R4 resource type from the R4 data: the parameter types added with it (number, quantity,
uri, composite), hand-written expected results, the plain-path walker against fhirpathpy, CRUD on
newly served types, the Patient compartment of new types, and the CapabilityStatement."""

from __future__ import annotations

import json

import fhirpathpy
import pytest
from fhirpathpy.models import models

from fhir_api.query import Target, condition_matches, parse_condition
from fhir_api.search_params import (
    COMPARTMENT_PARAMS,
    RESOURCE_TYPES,
    SEARCH_PARAMETERS,
    compartment,
    index_rows,
    index_values,
    split_expression,
)
from tests.fhir.conftest import FHIR_JSON, Api, assert_outcome, mint, seed

pytestmark = pytest.mark.django_db
A, B = "Patient/pa", "Patient/pb"


def _qty(value, code="mm[Hg]", system="http://unitsofmeasure.org", unit=None):
    q = {"value": value, "system": system, "code": code}
    if unit:
        q["unit"] = unit
    return q


def blood_pressure(patient: str, systolic: float, diastolic: float, when: str = "2024-05-01") -> dict:
    return {"resourceType": "Observation", "status": "final", "subject": {"reference": patient},
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}, "effectiveDateTime": when,
            "valueQuantity": _qty(systolic, unit="mmHg"),
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                 "valueQuantity": _qty(systolic)},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                 "valueQuantity": _qty(diastolic)}]}


def _two_readings(project) -> dict[str, str]:
    first, second = seed(project, blood_pressure(A, 120, 80)), seed(project, blood_pressure(A, 101, 70))
    return {"o1": first["id"], "o2": second["id"]}


# --- index values, hand-written --------------------------------------------------------------

def test_quantity_and_composite_index_values():
    index = index_values("Observation", blood_pressure(A, 120, 80))
    # One row per coded quantity (``||code`` searches match its ``|code`` suffix); a unit that is
    # not the code is a second one.
    assert index["value-quantity"] == ["120|http://unitsofmeasure.org|mm[Hg]", "120||mmHg"]
    assert index["component-value-quantity"] == ["120|http://unitsofmeasure.org|mm[Hg]",
                                                 "80|http://unitsofmeasure.org|mm[Hg]"]
    assert index["component-code-value-quantity"] == [
        "8480-6$120|http://unitsofmeasure.org|mm[Hg]", "http://loinc.org|8480-6$120|http://unitsofmeasure.org|mm[Hg]",
        "8462-4$80|http://unitsofmeasure.org|mm[Hg]", "http://loinc.org|8462-4$80|http://unitsofmeasure.org|mm[Hg]"]
    rows = {(name, value, number) for name, value, number in index_rows("Observation", index)}
    assert ("value-quantity", "http://unitsofmeasure.org|mm[Hg]", 120.0) in rows
    assert ("value-quantity", "|mmHg", 120.0) in rows
    assert ("component-code-value-quantity", "8462-4$http://unitsofmeasure.org|mm[Hg]", 80.0) in rows
    no_system = index_values("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "w"},
                                             "valueQuantity": {"value": 70, "code": "kg", "unit": "kg"}})
    assert no_system["value-quantity"] == ["70||kg"]
    unit_only = index_values("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "w"},
                                             "valueQuantity": {"value": 70, "unit": "kilo"}})
    assert unit_only["value-quantity"] == ["70||kilo"]
    bare = index_values("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "w"},
                                        "valueQuantity": {"value": 70}})
    assert bare["value-quantity"] == ["70||"]


def test_number_uri_and_string_parts():
    risk = {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": A},
            "prediction": [{"probabilityDecimal": 0.25}, {"probabilityDecimal": 3}]}
    assert index_values("RiskAssessment", risk)["probability"] == ["0.25", "3"]
    assert list(index_rows("RiskAssessment", {"probability": ["0.25"]})) == [("probability", "0.25", 0.25)]
    questionnaire = {"resourceType": "Questionnaire", "status": "active", "url": "http://example.org/q/intake",
                     "name": "Intake"}
    assert index_values("Questionnaire", questionnaire)["url"] == ["http://example.org/q/intake"]
    patient = {"resourceType": "Patient", "name": [{"given": ["Ann", "Marie"], "family": "Lee", "prefix": ["Dr"]}],
               "address": [{"line": ["1 Main St"], "city": "Springfield"}],
               "telecom": [{"system": "email", "value": "ann@example.org"}, {"system": "phone", "value": "555"}]}
    index = index_values("Patient", patient)
    assert index["name"] == ["lee", "ann", "marie", "dr"]
    assert index["address"] == ["1 main st", "springfield"]
    assert index["email"] == ["ann@example.org"]  # through fhirpathpy: telecom.where(system='email')
    assert index["phone"] == ["555"]
    assert index["telecom"] == ["ann@example.org", "555"]


@pytest.mark.parametrize(("value", "expected"), [
    ("120", {"o1"}), ("120.0", {"o1"}), ("1.2e2", {"o1"}), ("119.6", set()), ("gt119", {"o1"}),
    ("lt120", {"o2"}), ("le120", {"o1", "o2"}), ("ge121", set()), ("ne120", {"o2"}), ("ap110", {"o1", "o2"}),
    ("120|http://unitsofmeasure.org|mm[Hg]", {"o1"}), ("120||mm[Hg]", {"o1"}), ("120||mmHg", {"o1"}),
    ("120|http://other|mm[Hg]", set()), ("lt200||kg", set()), ("sa100", {"o1", "o2"}), ("eb101", set()),
    ("gt100||mm[Hg]", {"o1", "o2"}), ("gt100||Hg]", set()), ("gt100|http://unitsofmeasure.org|mmHg", set()),
    ("1.2e2|http://unitsofmeasure.org|mm[Hg]", {"o1"}), ("ap100|http://unitsofmeasure.org|mm[Hg]", {"o2"}),
])
def test_quantity_search(full_api, project1, value, expected):
    ids = _two_readings(project1)
    response = full_api.get("/Observation", {"value-quantity": value})
    assert response.status_code == 200, response.content
    found = {e["resource"]["id"] for e in response.json().get("entry", [])}
    assert found == {ids[k] for k in expected}


@pytest.mark.parametrize(("value", "expected"), [
    ("http://loinc.org|8480-6$120", {"o1"}), ("8480-6$gt110", {"o1"}), ("8462-4$lt75", {"o2"}),
    ("8462-4$80|http://unitsofmeasure.org|mm[Hg]", {"o1"}), ("8462-4$80||kg", set()), ("8480-6$80", set()),
    ("8480-6$ge100,8462-4$gt79", {"o1", "o2"}), ("8462-4$80||mm[Hg]", {"o1"}),
    ("http://loinc.org|8462-4$gt60||mm[Hg]", {"o1", "o2"}), ("8462-4$80||Hg]", set()), ("8480-6$80||mm[Hg]", set()),
])
def test_composite_token_quantity_search(full_api, project1, value, expected):
    ids = _two_readings(project1)
    response = full_api.get("/Observation", {"component-code-value-quantity": value})
    assert response.status_code == 200, response.content
    assert {e["resource"]["id"] for e in response.json().get("entry", [])} == {ids[k] for k in expected}


def test_composite_token_token_and_number_and_uri_search(full_api, project1):
    concept = {"resourceType": "Observation", "status": "final", "code": {"coding": [{"code": "smoker"}]},
               "valueCodeableConcept": {"coding": [{"system": "urn:s", "code": "never"}]}}
    smoker = seed(project1, concept)["id"]
    assert {e["resource"]["id"] for e in full_api.get(
        "/Observation", {"code-value-concept": "smoker$urn:s|never"}).json()["entry"]} == {smoker}
    assert not full_api.get("/Observation", {"code-value-concept": "smoker$daily"}).json()["entry"]
    risk = seed(project1, {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": A},
                           "prediction": [{"probabilityDecimal": 0.25}]})["id"]
    # eq is the range of the precision given: 0.3 is [0.25, 0.35), 0.30 is [0.295, 0.305).
    for value, hit in [("0.25", True), ("gt0.2", True), ("lt0.2", False), ("0.3", True), ("0.30", False),
                       ("0.4", False), ("ap0.24", True), ("ne0.25", False)]:
        body = full_api.get("/RiskAssessment", {"probability": value}).json()
        assert ([e["resource"]["id"] for e in body.get("entry", [])] == [risk]) is hit, value
    q = seed(project1, {"resourceType": "Questionnaire", "status": "active", "url": "http://example.org/q/intake"})["id"]
    assert [e["resource"]["id"] for e in full_api.get(
        "/Questionnaire", {"url": "http://example.org/q/intake"}).json()["entry"]] == [q]
    assert [e["resource"]["id"] for e in full_api.get(
        "/Questionnaire", {"url:below": "http://example.org/q/"}).json()["entry"]] == [q]
    assert not full_api.get("/Questionnaire", {"url": "http://example.org/q"}).json()["entry"]


@pytest.mark.parametrize(("param", "value"), [
    ("value-quantity", "abc"), ("value-quantity", "gt"), ("value-quantity", "1e99999"), ("value-quantity", "nan"),
    ("component-code-value-quantity", "8480-6"), ("component-code-value-quantity", "$5"),
    ("component-code-value-quantity", "8480-6$"), ("component-code-value-quantity", "8480-6$abc"),
    ("value-quantity:contains", "5"), ("code-value-date", "x$notadate"),
])
def test_bad_new_type_values_are_400(full_api, project1, param, value):
    assert_outcome(full_api.get("/Observation", {param: value}), 400, "invalid")


def test_python_check_agrees_with_the_database_on_new_types(full_api, project1):
    """Policy criteria on number/quantity/composite parameters: the write check and the query agree."""
    stored = [seed(project1, blood_pressure(A, s, d)) for s, d in [(120, 80), (101, 70), (140, 95)]]
    for key, value in [("value-quantity", "gt110"), ("component-code-value-quantity", "8462-4$lt85"),
                       ("value-quantity", "101||mm[Hg]")]:
        condition = parse_condition("Observation", key, value)
        expected = {c["id"] for c in stored if condition_matches(
            condition, Target(c["id"], "", None, index_values("Observation", c)), "Observation")}
        found = {e["resource"]["id"] for e in full_api.get("/Observation", {key: value}).json().get("entry", [])}
        assert found == expected and found, (key, value)


# --- the data-driven mechanism ---------------------------------------------------------------

SAMPLES = [
    blood_pressure(A, 120, 80),
    {"resourceType": "Condition", "subject": {"reference": A}, "onsetPeriod": {"start": "2020-01-01"},
     "abatementDateTime": "2021-02-03", "code": {"coding": [{"code": "x"}]}},
    {"resourceType": "Communication", "status": "completed", "subject": {"reference": A},
     "sender": {"reference": "Practitioner/d"}, "recipient": [{"reference": A}], "sent": "2024-01-01T10:00:00Z"},
    {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": A},
     "focus": {"reference": "ServiceRequest/s"}, "authoredOn": "2024-02-02"},
    {"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": {"reference": A},
     "medicationReference": {"reference": "Medication/m"}},
]


def test_the_plain_path_walker_agrees_with_fhirpathpy():
    """Each plain-path expression walked over the JSON gives what fhirpathpy gives (``resolve()``,
    which fhirpathpy lacks, is compared as a filter on the reference's type)."""
    compared = 0
    for resource in SAMPLES:
        rtype = resource["resourceType"]
        for name, param in SEARCH_PARAMETERS[rtype].items():
            if param.type == "composite" or "where(" in param.expression.replace("where(resolve()", ""):
                continue
            expression, wanted = param.expression, None
            if "where(resolve() is " in expression:
                wanted = expression.split("where(resolve() is ")[1].split(")")[0]
                expression = " | ".join(a.split(".where(resolve()")[0] for a in split_expression(expression))
            expected = fhirpathpy.evaluate(json.loads(json.dumps(resource)), expression, {}, models["r4"])
            if wanted:
                expected = [r for r in expected if r.get("reference", "").startswith(wanted + "/")]
            assert json.loads(json.dumps(param.evaluate(resource))) == json.loads(json.dumps(expected)), (rtype, name)
            compared += 1
    assert compared > 100


def test_every_r4_type_is_served_and_the_compartment_comes_from_the_definition():
    assert len(RESOURCE_TYPES) >= 120 and "AuditEvent" not in RESOURCE_TYPES and "Binary" in RESOURCE_TYPES
    for rtype in ("Communication", "Task", "Questionnaire", "QuestionnaireResponse", "ServiceRequest", "Appointment",
                  "PractitionerRole", "Location", "CareTeam", "Goal", "Coverage", "Device", "Provenance"):
        assert rtype in RESOURCE_TYPES
    assert COMPARTMENT_PARAMS["Communication"] == ("subject", "sender", "recipient")
    assert "Location" not in COMPARTMENT_PARAMS and "Questionnaire" not in COMPARTMENT_PARAMS
    communication = SAMPLES[2]
    assert compartment("Communication", "c", index_values("Communication", communication)) == A
    # The first compartment parameter with a value decides; two patients there: none.
    two = {**communication, "subject": {"reference": "Group/g"}}
    assert compartment("Communication", "c", index_values("Communication", two)) == ""
    appointment = {"resourceType": "Appointment", "status": "booked",
                   "participant": [{"actor": {"reference": A}, "status": "accepted"},
                                   {"actor": {"reference": "Practitioner/d"}, "status": "accepted"}]}
    assert compartment("Appointment", "x", index_values("Appointment", appointment)) == A
    appointment["participant"].append({"actor": {"reference": B}, "status": "accepted"})
    assert compartment("Appointment", "x", index_values("Appointment", appointment)) == ""
    assert compartment("Location", "l", index_values("Location", {"resourceType": "Location"})) == ""


def test_capability_statement_lists_every_type_and_its_parameters(anonymous):
    body = anonymous.get("/metadata").json()
    resources = {r["type"]: r for r in body["rest"][0]["resource"]}
    assert set(RESOURCE_TYPES) | {"AuditEvent"} == set(resources)
    observation = {p["name"]: p["type"] for p in resources["Observation"]["searchParam"]}
    assert observation["value-quantity"] == "quantity" and observation["component-code-value-quantity"] == "composite"
    assert {p["name"] for p in resources["Task"]["searchParam"]} >= {"_id", "_lastUpdated", "patient", "owner",
                                                                      "status"}
    assert "Communication:subject" in resources["Patient"]["searchRevInclude"]


# --- CRUD on new types, and the patient compartment ------------------------------------------

NEW_TYPES = {
    "Communication": ({"status": "completed", "subject": {"reference": "{p}"}, "payload": [{"contentString": "hi"}]},
                      "subject"),
    "Task": ({"status": "requested", "intent": "order", "for": {"reference": "{p}"}}, "patient"),
    "Questionnaire": ({"status": "active", "name": "intake", "url": "http://example.org/q/{n}"}, None),
    "QuestionnaireResponse": ({"status": "completed", "subject": {"reference": "{p}"}}, "subject"),
    "ServiceRequest": ({"status": "active", "intent": "order", "subject": {"reference": "{p}"}}, "subject"),
    "Appointment": ({"status": "booked", "participant": [{"actor": {"reference": "{p}"}, "status": "accepted"}]},
                    "actor"),
    "PractitionerRole": ({"active": True, "code": [{"text": "gp-{n}"}]}, None),
    "Location": ({"name": "Ward {n}", "status": "active"}, None),
    "CareTeam": ({"status": "active", "subject": {"reference": "{p}"}}, "patient"),
    "Goal": ({"lifecycleStatus": "active", "description": {"text": "walk"}, "subject": {"reference": "{p}"}},
             "patient"),
    "Coverage": ({"status": "active", "beneficiary": {"reference": "{p}"}, "payor": [{"reference": "{p}"}]},
                 "beneficiary"),
    "Consent": ({"status": "active", "scope": {"text": "x"}, "category": [{"text": "x"}],
                 "patient": {"reference": "{p}"}}, "patient"),
}


def new_resource(rtype: str, patient: str, n: str) -> dict:
    text = json.dumps(NEW_TYPES[rtype][0]).replace("{p}", patient).replace("{n}", n)
    return {"resourceType": rtype, **json.loads(text)}


@pytest.mark.parametrize("rtype", sorted(NEW_TYPES))
def test_crud_on_newly_served_types(full_api, alice, rtype):
    created = full_api.post(f"/{rtype}", new_resource(rtype, alice.profile, "1"))
    assert created.status_code == 201, created.content
    rid = created.json()["id"]
    assert full_api.get(f"/{rtype}/{rid}").json()["id"] == rid
    param = NEW_TYPES[rtype][1]
    query = {param: alice.profile} if param else {"_id": rid}
    assert [e["resource"]["id"] for e in full_api.get(f"/{rtype}", query).json()["entry"]] == [rid]
    assert_outcome(full_api.post(f"/{rtype}", {"resourceType": rtype, "status": 5}), 400, "invalid")
    assert full_api.delete(f"/{rtype}/{rid}").status_code == 200
    assert_outcome(full_api.get(f"/{rtype}/{rid}"), 410, "deleted")


def test_policy_criteria_work_on_new_types(client, app1, project1, alice, bob):
    from tests.factories import AccessPolicyFactory

    alice.access_policy = AccessPolicyFactory(project=project1, resources=[
        {"resourceType": "Communication", "criteria": "Communication?subject=%patient"}])
    alice.save()
    mine = seed(project1, new_resource("Communication", alice.profile, "a"))["id"]
    theirs = seed(project1, new_resource("Communication", bob.profile, "b"))["id"]
    api = Api(client, mint(client=app1, membership=alice, scope="openid"))
    assert [e["resource"]["id"] for e in api.get("/Communication").json()["entry"]] == [mine]
    assert_outcome(api.get(f"/Communication/{theirs}"), 404, "not-found")
    assert_outcome(api.get("/Task"), 403, "forbidden")
    assert api.get(f"/Communication/{mine}", HTTP_ACCEPT=FHIR_JSON).status_code == 200
