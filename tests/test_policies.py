from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError

from medplum_auth.policies import (
    INTERACTIONS,
    READONLY_INTERACTIONS,
    parse_policy_json,
    substitute_parameters,
    validate_rules,
)

ALL = list(INTERACTIONS)
READ_ONLY = ["read", "vread", "history", "search"]


def test_interaction_constants():
    assert INTERACTIONS == ("create", "read", "vread", "update", "delete", "history", "search")
    assert list(READONLY_INTERACTIONS) == READ_ONLY


@pytest.mark.parametrize(("rules", "expected"), [
    ([], []),
    ([{"resourceType": "Patient"}], [{"resourceType": "Patient", "interaction": ALL}]),
    ([{"resourceType": "*"}], [{"resourceType": "*", "interaction": ALL}]),
    ([{"resourceType": "Patient", "readonly": True}], [{"resourceType": "Patient", "interaction": READ_ONLY}]),
    ([{"resourceType": "Patient", "readonly": False}], [{"resourceType": "Patient", "interaction": ALL}]),
    ([{"resourceType": "Patient", "readonly": False, "interaction": ["read"]}],
     [{"resourceType": "Patient", "interaction": ["read"]}]),
    ([{"resourceType": "Patient", "interaction": ["search", "read", "search", "create"]}],
     [{"resourceType": "Patient", "interaction": ["create", "read", "search"]}]),
    ([{"resourceType": "Observation", "criteria": "  Observation?subject=%patient  "}],
     [{"resourceType": "Observation", "criteria": "Observation?subject=%patient", "interaction": ALL}]),
    ([{"resourceType": "*", "criteria": "Observation?_compartment=%patient"}],
     [{"resourceType": "*", "criteria": "Observation?_compartment=%patient", "interaction": ALL}]),
    ([{"resourceType": "Observation", "criteria": "Observation?code:text=bp&status=final"}],
     [{"resourceType": "Observation", "criteria": "Observation?code:text=bp&status=final", "interaction": ALL}]),
    ([{"resourceType": "Patient", "hiddenFields": ["name", "telecom.value", "name"], "readonlyFields": ["gender"]}],
     [{"resourceType": "Patient", "interaction": ALL, "hiddenFields": ["name", "telecom.value"],
       "readonlyFields": ["gender"]}]),
    ([{"resourceType": "Patient", "criteria": None, "readonly": None, "hiddenFields": [], "readonlyFields": []}],
     [{"resourceType": "Patient", "interaction": ALL}]),
])
def test_validate_rules_normalises(rules, expected):
    assert validate_rules(rules) == expected


def test_validate_rules_is_idempotent():
    rules = [{"resourceType": "Observation", "criteria": "Observation?subject=%patient", "readonly": True,
              "hiddenFields": ["note"]}]
    once = validate_rules(rules)
    assert validate_rules(once) == once


def test_validate_rules_does_not_mutate_input():
    rules = [{"resourceType": "Patient", "readonly": True}]
    validate_rules(rules)
    assert rules == [{"resourceType": "Patient", "readonly": True}]


ALLOWED = "allowed: create, read, vread, update, delete, history, search."


@pytest.mark.parametrize(("rule", "code", "message"), [
    ("Patient", "invalid_rule", "Rule 1: must be an object."),
    ({"resourceType": "Patient", "writeonly": True, "extra": 1}, "unknown_key",
     "Rule 1: unknown key(s) extra, writeonly."),
    ({"resourceType": "Patient", "interaction": ["read", "patch", "operate"]}, "unknown_interaction",
     f"Rule 1: unknown interaction(s) patch, operate; {ALLOWED}"),
    ({"resourceType": "Patient", "interaction": []}, "invalid_interaction",
     "Rule 1: interaction must be a non-empty list of create, read, vread, update, delete, history, search."),
    ({"resourceType": "Patient", "interaction": "read"}, "invalid_interaction",
     "Rule 1: interaction must be a non-empty list of create, read, vread, update, delete, history, search."),
    ({"resourceType": "Patient", "readonly": True, "interaction": ["read"]}, "readonly_conflict",
     "Rule 1: use either readonly or interaction, not both."),
    ({"resourceType": "Patient", "readonly": "yes"}, "invalid_readonly", "Rule 1: readonly must be true or false."),
    ({}, "invalid_resource_type", "Rule 1: resourceType must be a FHIR resource type (e.g. 'Observation') or '*'."),
    ({"resourceType": "patient"}, "invalid_resource_type",
     "Rule 1: resourceType must be a FHIR resource type (e.g. 'Observation') or '*'."),
    ({"resourceType": "Patient\n"}, "invalid_resource_type",
     "Rule 1: resourceType must be a FHIR resource type (e.g. 'Observation') or '*'."),
    ({"resourceType": "Pat ient"}, "invalid_resource_type",
     "Rule 1: resourceType must be a FHIR resource type (e.g. 'Observation') or '*'."),
    ({"resourceType": 42}, "invalid_resource_type",
     "Rule 1: resourceType must be a FHIR resource type (e.g. 'Observation') or '*'."),
    ({"resourceType": "Observation", "criteria": "Patient?_id=%patient.id"}, "invalid_criteria",
     "Rule 1: criteria 'Patient?_id=%patient.id' must start with 'Observation?'."),
    ({"resourceType": "Observation", "criteria": "subject=%patient"}, "invalid_criteria",
     "Rule 1: criteria 'subject=%patient' must look like 'Type?param=value'."),
    ({"resourceType": "Observation", "criteria": "Observation?"}, "invalid_criteria",
     "Rule 1: criteria 'Observation?' must look like 'Type?param=value'."),
    ({"resourceType": "Observation", "criteria": ""}, "invalid_criteria",
     "Rule 1: criteria must be a non-empty string like 'Observation?subject=%patient'."),
    ({"resourceType": "Observation", "criteria": ["Observation?subject=%patient"]}, "invalid_criteria",
     "Rule 1: criteria must be a non-empty string like 'Observation?subject=%patient'."),
    ({"resourceType": "*", "criteria": "*?subject=%patient"}, "invalid_criteria",
     "Rule 1: criteria '*?subject=%patient' must start with a resource type."),
    ({"resourceType": "Observation", "criteria": "Observation?subject"}, "invalid_criteria",
     "Rule 1: criteria parameter 'subject' must be 'name=value'."),
    ({"resourceType": "Observation", "criteria": "Observation?subject="}, "invalid_criteria",
     "Rule 1: criteria parameter 'subject=' must be 'name=value'."),
    ({"resourceType": "Observation", "criteria": "Observation?subject=%patient&&status=final"}, "invalid_criteria",
     "Rule 1: criteria parameter '' must be 'name=value'."),
    ({"resourceType": "Observation", "criteria": "Observation?subject\n=%patient"}, "invalid_criteria",
     "Rule 1: criteria parameter 'subject\\n=%patient' must be 'name=value'."),
    ({"resourceType": "Observation", "criteria": "Observation?subject=Patient/a\x00b"}, "invalid_criteria",
     "Rule 1: criteria must not contain control characters."),
    ({"resourceType": "Observation", "criteria": "Observation?code=a\tb"}, "invalid_criteria",
     "Rule 1: criteria must not contain control characters."),
    ({"resourceType": "Patient", "criteria": "Patient?_has:Observation:patient:code=1234"}, "invalid_criteria",
     "Rule 1: criteria must not use _has (Medplum constraint axp-3)."),
    ({"resourceType": "Patient", "criteria": "Patient?_id=%patient.id&_has=x"}, "invalid_criteria",
     "Rule 1: criteria must not use _has (Medplum constraint axp-3)."),
    ({"resourceType": "Patient", "hiddenFields": "name"}, "invalid_fields",
     "Rule 1: hiddenFields must be a list of element paths like 'name' or 'telecom.value'."),
    ({"resourceType": "Patient", "hiddenFields": ["Name"]}, "invalid_fields",
     "Rule 1: hiddenFields must be a list of element paths like 'name' or 'telecom.value'."),
    ({"resourceType": "Patient", "hiddenFields": ["telecom..value"]}, "invalid_fields",
     "Rule 1: hiddenFields must be a list of element paths like 'name' or 'telecom.value'."),
    ({"resourceType": "Patient", "hiddenFields": ["name\n"]}, "invalid_fields",
     "Rule 1: hiddenFields must be a list of element paths like 'name' or 'telecom.value'."),
    ({"resourceType": "Patient", "hiddenFields": [1]}, "invalid_fields",
     "Rule 1: hiddenFields must be a list of element paths like 'name' or 'telecom.value'."),
    ({"resourceType": "Patient", "readonlyFields": ["Patient.name"]}, "invalid_fields",
     "Rule 1: readonlyFields must be a list of element paths like 'name' or 'telecom.value'."),
])
def test_validate_rules_refuses(rule, code, message):
    with pytest.raises(ValidationError) as exc:
        validate_rules([rule])
    assert [e.code for e in exc.value.error_list] == [code]
    assert exc.value.messages == [message]


@pytest.mark.parametrize("rules", [None, {"resourceType": "Patient"}, "Patient", 1])
def test_validate_rules_needs_a_list(rules):
    with pytest.raises(ValidationError) as exc:
        validate_rules(rules)
    assert exc.value.code == "invalid_policy"
    assert exc.value.messages == ["Access policy must be a list of rules."]


def test_every_bad_rule_is_reported_with_its_number():
    rules = [
        {"resourceType": "Patient"},
        {"resourceType": "Observation", "interaction": ["patch"]},
        {"resourceType": "Patient", "readonly": True},
        {"resourceType": "patient"},
        {"resourceType": "Patient", "criteria": "Patient?_has:Observation:patient:code=1"},
    ]
    with pytest.raises(ValidationError) as exc:
        validate_rules(rules)
    assert exc.value.messages == [
        f"Rule 2: unknown interaction(s) patch; {ALLOWED}",
        "Rule 4: resourceType must be a FHIR resource type (e.g. 'Observation') or '*'.",
        "Rule 5: criteria must not use _has (Medplum constraint axp-3).",
    ]


def test_parse_policy_json_accepts_a_rule_list():
    text = json.dumps([{"resourceType": "Patient", "readonly": True}])
    assert parse_policy_json(text) == [{"resourceType": "Patient", "interaction": READ_ONLY}]
    assert parse_policy_json(text.encode()) == [{"resourceType": "Patient", "interaction": READ_ONLY}]


def test_parse_policy_json_accepts_a_medplum_access_policy_object():
    text = json.dumps({"resourceType": "AccessPolicy", "name": "Patients",
                       "resource": [{"resourceType": "Observation", "criteria": "Observation?subject=%patient"}]})
    assert parse_policy_json(text) == [
        {"resourceType": "Observation", "criteria": "Observation?subject=%patient", "interaction": ALL},
    ]


@pytest.mark.parametrize("text", ["", "[", "{'resourceType': 'Patient'}", "[1,]", None])
def test_parse_policy_json_refuses_invalid_json(text):
    with pytest.raises(ValidationError) as exc:
        parse_policy_json(text)
    assert exc.value.code == "invalid_json"
    assert exc.value.messages[0].startswith("Access policy is not valid JSON: ")


@pytest.mark.parametrize("text", [
    '{"resourceType": "AccessPolicy"}', '{"resource": {"resourceType": "Patient"}}', '"x"',
])
def test_parse_policy_json_refuses_non_list(text):
    with pytest.raises(ValidationError) as exc:
        parse_policy_json(text)
    assert exc.value.messages == ["Access policy must be a list of rules."]


def test_parse_policy_json_reports_rule_errors():
    with pytest.raises(ValidationError) as exc:
        parse_policy_json('{"resource": [{"resourceType": "Patient", "nope": 1}]}')
    assert exc.value.messages == ["Rule 1: unknown key(s) nope."]


PARAMS = {"patient": "Patient/p1", "profile": "Practitioner/dr1", "organization": "Organization/o1", "tag": "vip"}


@pytest.mark.parametrize(("criteria", "expected"), [
    ("Observation?subject=%patient", "Observation?subject=Patient/p1"),
    ("Patient?_id=%patient.id", "Patient?_id=p1"),
    ("Encounter?participant=%profile", "Encounter?participant=Practitioner/dr1"),
    ("Practitioner?_id=%profile.id", "Practitioner?_id=dr1"),
    ("Patient?organization=%organization&_tag=%tag", "Patient?organization=Organization/o1&_tag=vip"),
    ("Patient?_tag=%tag.id", "Patient?_tag=vip"),
    ("Observation?status=final", "Observation?status=final"),
])
def test_substitute_parameters(criteria, expected):
    rules = [{"resourceType": criteria.split("?")[0], "criteria": criteria, "interaction": ["read"]}]
    assert substitute_parameters(rules, PARAMS) == [
        {"resourceType": criteria.split("?")[0], "criteria": expected, "interaction": ["read"]},
    ]


@pytest.mark.parametrize("parameters", [{}, {"patient": ""}, {"profile": "Practitioner/dr1"}])
def test_missing_parameter_drops_the_rule_instead_of_widening_it(parameters):
    rules = [
        {"resourceType": "Observation", "criteria": "Observation?subject=%patient", "interaction": ["read"]},
        {"resourceType": "Patient", "criteria": "Patient?_id=%patient.id&active=true", "interaction": ["read"]},
        {"resourceType": "ValueSet", "interaction": ["read", "search"]},
    ]
    assert substitute_parameters(rules, parameters) == [{"resourceType": "ValueSet", "interaction": ["read", "search"]}]


def test_one_missing_parameter_drops_the_rule_even_when_others_are_bound():
    rules = [{"resourceType": "Patient", "criteria": "Patient?_id=%patient.id&organization=%organization"}]
    assert substitute_parameters(rules, {"patient": "Patient/p1"}) == []


def test_substitute_parameters_copies_rules():
    rules = [{"resourceType": "Observation", "criteria": "Observation?subject=%patient"}, {"resourceType": "Patient"}]
    out = substitute_parameters(rules, PARAMS)
    out[0]["criteria"] = "changed"
    out[1]["resourceType"] = "changed"
    assert rules == [{"resourceType": "Observation", "criteria": "Observation?subject=%patient"},
                     {"resourceType": "Patient"}]
