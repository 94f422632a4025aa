"""The effective policy engine: rules ∩ SMART scopes ∩ patient context (table-driven)."""

from __future__ import annotations

import pytest

from medplum_auth.access import COMPARTMENT_PARAM, compile_policy, explain, parse_request_line
from medplum_auth.policies import validate_rules

PATIENT = "Patient/p1"
PARAMS = {"patient": PATIENT, "profile": PATIENT}

PATIENT_POLICY = validate_rules([
    {"resourceType": "Patient", "criteria": "Patient?_id=%patient.id", "interaction": ["read", "search"]},
    {"resourceType": "Observation", "criteria": "Observation?subject=%patient", "readonly": True,
     "hiddenFields": ["note"]},
    {"resourceType": "Questionnaire", "interaction": ["read", "search"]},
])


@pytest.mark.parametrize(("rules", "scopes", "patient", "resource_type", "interaction", "outcome", "filters"), [
    # No policy = full access (Medplum legacy); no SMART resource scopes = policy alone.
    (None, ["openid"], None, "Observation", "delete", "allowed", ()),
    (PATIENT_POLICY, ["openid"], None, "Patient", "read", "filtered", ((("_id", "p1"),),)),
    (PATIENT_POLICY, ["openid"], None, "Patient", "update", "forbidden", ()),
    (PATIENT_POLICY, [], None, "Observation", "search", "filtered", ((("subject", PATIENT),),)),
    (PATIENT_POLICY, [], None, "Observation", "create", "forbidden", ()),
    (PATIENT_POLICY, [], None, "Questionnaire", "search", "allowed", ()),
    (PATIENT_POLICY, [], None, "Condition", "read", "forbidden", ()),
    # SMART v1 / v2 narrow interactions; never widen past the policy.
    (None, ["user/Observation.read"], None, "Observation", "search", "allowed", ()),
    (None, ["user/Observation.read"], None, "Observation", "update", "forbidden", ()),
    (None, ["user/Observation.read"], None, "Condition", "read", "forbidden", ()),
    (None, ["user/*.cruds"], None, "Condition", "delete", "allowed", ()),
    (None, ["user/Observation.rs"], None, "Observation", "history", "allowed", ()),
    (None, ["user/Observation.s"], None, "Observation", "read", "forbidden", ()),
    (PATIENT_POLICY, ["user/Observation.cruds"], None, "Observation", "update", "forbidden", ()),
    (PATIENT_POLICY, ["user/*.*"], None, "Condition", "read", "forbidden", ()),
    # v2 constraints AND into the criteria.
    (None, ["user/Observation.rs?category=laboratory"], None, "Observation", "search", "filtered",
     ((("category", "laboratory"),),)),
    (PATIENT_POLICY, ["user/Observation.rs?category=laboratory"], None, "Observation", "search", "filtered",
     ((("subject", PATIENT), ("category", "laboratory")),)),
    # patient/ scopes confine to the patient context, and grant nothing without one.
    (None, ["patient/Observation.rs"], PATIENT, "Observation", "search", "filtered",
     (((COMPARTMENT_PARAM, PATIENT),),)),
    (None, ["patient/Observation.rs"], None, "Observation", "search", "forbidden", ()),
    (None, ["patient/*.read"], PATIENT, "Condition", "read", "filtered", (((COMPARTMENT_PARAM, PATIENT),),)),
    # Malformed scopes grant nothing (and do not switch SMART narrowing off).
    (None, ["patient/Observation.sr", "user/Observation.read"], None, "Observation", "read", "allowed", ()),
    (None, ["patient/Observation.sr"], None, "Observation", "read", "allowed", ()),
    (None, ["user/Observation.write?x=1"], None, "Observation", "update", "allowed", ()),
])
def test_decide(rules, scopes, patient, resource_type, interaction, outcome, filters):
    policy = compile_policy(rules, PARAMS, scopes, patient)
    decision = policy.decide(resource_type, interaction)
    assert decision.outcome == outcome
    assert decision.filters == filters


def test_malformed_scopes_alone_leave_the_policy_in_charge():
    """A token whose only SMART-looking scopes are malformed is treated as having none: the
    policy alone applies, so a malformed scope can never add access the policy lacks."""
    policy = compile_policy(PATIENT_POLICY, PARAMS, ["patient/Observation.sr", "user/*.write?x"], PATIENT)
    assert policy.decide("Condition", "read").outcome == "forbidden"
    assert policy.decide("Observation", "search").filters == ((("subject", PATIENT),),)


def test_unbound_parameter_drops_the_rule():
    rules = validate_rules([{"resourceType": "Observation", "criteria": "Observation?performer=%practitioner"}])
    assert compile_policy(rules, PARAMS).decide("Observation", "read").outcome == "forbidden"


def test_hidden_and_readonly_fields_of_first_matching_rule():
    rules = validate_rules([
        {"resourceType": "Patient", "hiddenFields": ["birthDate"], "readonlyFields": ["identifier"]},
        {"resourceType": "*", "hiddenFields": ["text"]},
    ])
    policy = compile_policy(rules, PARAMS)
    assert policy.hidden_fields("Patient") == ("birthDate",)
    assert policy.readonly_fields("Patient") == ("identifier",)
    assert policy.hidden_fields("Observation") == ("text",)


def test_describe_in_plain_words():
    lines = compile_policy(PATIENT_POLICY, PARAMS, ["patient/Observation.rs"], PATIENT).describe()
    assert lines == ["May read, vread, history and search Observation where subject = Patient/p1 and "
                     "it belongs to Patient/p1; hidden: note"]
    assert compile_policy([], PARAMS).describe() == ["May do nothing"]


@pytest.mark.parametrize(("line", "expected"), [
    ("GET Observation?subject=Patient/1", ("search", "Observation", None, (("subject", "Patient/1"),))),
    ("GET /fhir/R4/Patient/123", ("read", "Patient", "123", ())),
    ("GET Patient/123/_history", ("history", "Patient", "123", ())),
    ("GET Patient/123/_history/2", ("vread", "Patient", "123", ())),
    ("POST Observation", ("create", "Observation", None, ())),
    ("PUT Observation/9", ("update", "Observation", "9", ())),
    ("delete Observation/9", ("delete", "Observation", "9", ())),
])
def test_parse_request_line(line, expected):
    assert parse_request_line(line) == expected


@pytest.mark.parametrize("line", ["GET", "PATCH Observation/1", "GET observation", "PUT Observation", ""])
def test_parse_request_line_rejects(line):
    with pytest.raises(ValueError):
        parse_request_line(line)


@pytest.mark.parametrize(("line", "outcome", "text"), [
    ("GET Observation?subject=Patient/456", "filtered",
     "Filtered: only Observation resources where (subject = Patient/p1) are returned."),
    ("GET Patient/p1", "filtered", "Filtered: Patient/p1 is reachable only if (_id = p1); otherwise 404 Not Found."),
    ("PUT Patient/p1", "forbidden", "403 Forbidden: no rule allows update on Patient."),
    ("GET Questionnaire/q", "allowed", "Allowed: read on any Questionnaire."),
])
def test_explain(line, outcome, text):
    decision = explain(compile_policy(PATIENT_POLICY, PARAMS), line)
    assert (decision.outcome, decision.reason) == (outcome, text)


def test_unnormalised_readonly_rule_stays_read_only():
    """Rules stored without validation (e.g. raw JSON) are normalised before granting."""
    policy = compile_policy([{"resourceType": "Observation", "readonly": True}], PARAMS)
    assert policy.decide("Observation", "read").outcome == "allowed"
    assert policy.decide("Observation", "update").outcome == "forbidden"


def test_invalid_stored_policy_grants_nothing():
    policy = compile_policy([{"resourceType": "Observation", "interaction": ["write"]}], PARAMS)
    assert policy.decide("Observation", "read").outcome == "forbidden"
    assert policy.grants == ()


def test_wildcard_rule_with_criteria_grants_only_the_criteria_type():
    policy = compile_policy([{"resourceType": "*", "criteria": "Observation?subject=%patient"}], PARAMS)
    assert policy.decide("Observation", "search").filters == ((("subject", PATIENT),),)
    assert policy.decide("Condition", "search").outcome == "forbidden"


def test_compiled_policies_are_shared_only_between_equal_inputs():
    """The in-memory compilation is keyed by the rules' content, never by a policy id: an edit
    (or a different parameter, scope or patient) can never be answered by a stale compilation."""
    rules = validate_rules([{"resourceType": "Observation", "criteria": "Observation?subject=%patient"}])
    first = compile_policy(rules, PARAMS, ["patient/*.rs"], PATIENT)
    assert compile_policy(validate_rules(list(rules)), dict(PARAMS), ["patient/*.rs"], PATIENT) is first
    assert first.decide("Observation", "read").outcome == "filtered"
    # The same policy row, edited in place: a new compilation with the new meaning.
    rules[0]["criteria"] = "Observation?subject=Patient/someone-else"
    edited = compile_policy(rules, PARAMS, ["patient/*.rs"], PATIENT)
    assert edited is not first
    assert ("subject", "Patient/someone-else") in edited.decide("Observation", "read").filters[0]
    rules[0]["interaction"] = ["create"]
    assert compile_policy(rules, PARAMS, ["patient/*.rs"], PATIENT).decide("Observation", "read").outcome == \
        "forbidden"
    other = {"patient": "Patient/p2", "profile": "Patient/p2"}
    assert compile_policy(rules, other, ["patient/*.rs"], PATIENT) is not compile_policy(
        rules, PARAMS, ["patient/*.rs"], PATIENT)
    assert compile_policy(None, PARAMS, ["patient/*.r"], "Patient/p2").decide("Observation", "search").outcome == \
        "forbidden"
    with pytest.raises(AttributeError):
        first.grants = ()  # shared between requests: immutable


# --- member policy ∩ client policy ---------------------------------------------------------------

CLIENT_POLICY = validate_rules([
    {"resourceType": "Observation", "criteria": "Observation?category=laboratory", "interaction": ["read", "search"],
     "hiddenFields": ["interpretation"], "readonlyFields": ["status"]},
    {"resourceType": "Patient", "interaction": ["read"]},
])


@pytest.mark.parametrize(("rules", "client_rules", "resource_type", "interaction", "outcome", "filters"), [
    # A request must be allowed by both sides.
    (None, CLIENT_POLICY, "Observation", "search", "filtered", ((("category", "laboratory"),),)),
    (None, CLIENT_POLICY, "Observation", "create", "forbidden", ()),
    (None, CLIENT_POLICY, "Condition", "read", "forbidden", ()),
    (None, CLIENT_POLICY, "Patient", "read", "allowed", ()),
    (None, CLIENT_POLICY, "Patient", "search", "forbidden", ()),
    (PATIENT_POLICY, CLIENT_POLICY, "Patient", "read", "filtered", ((("_id", "p1"),),)),
    (PATIENT_POLICY, CLIENT_POLICY, "Patient", "search", "forbidden", ()),
    (PATIENT_POLICY, CLIENT_POLICY, "Questionnaire", "read", "forbidden", ()),
    # Filters of both sides AND together.
    (PATIENT_POLICY, CLIENT_POLICY, "Observation", "search", "filtered",
     ((("subject", PATIENT), ("category", "laboratory")),)),
    # No client policy: no extra restriction (the same as no client at all).
    (PATIENT_POLICY, None, "Questionnaire", "search", "allowed", ()),
    (None, None, "Condition", "delete", "allowed", ()),
    # A wildcard rule on either side meets the other side's type.
    (validate_rules([{"resourceType": "*", "interaction": ["read"]}]), CLIENT_POLICY, "Patient", "read", "allowed", ()),
    (validate_rules([{"resourceType": "Observation"}]), validate_rules([{"resourceType": "*"}]), "Observation",
     "update", "allowed", ()),
    (validate_rules([{"resourceType": "Observation"}]), validate_rules([{"resourceType": "*"}]), "Condition",
     "read", "forbidden", ()),
    # An empty client policy allows nothing.
    (None, [], "Patient", "read", "forbidden", ()),
])
def test_member_and_client_policy_both_decide(rules, client_rules, resource_type, interaction, outcome, filters):
    decision = compile_policy(rules, PARAMS, None, None, client_rules).decide(resource_type, interaction)
    assert (decision.outcome, decision.filters) == (outcome, filters)


def test_each_sides_alternatives_are_kept_as_alternatives():
    member = validate_rules([
        {"resourceType": "Observation", "criteria": "Observation?category=laboratory"},
        {"resourceType": "Observation", "criteria": "Observation?category=vital-signs"},
    ])
    client = validate_rules([
        {"resourceType": "Observation", "criteria": "Observation?subject=Patient/a"},
        {"resourceType": "Observation", "criteria": "Observation?subject=Patient/b"},
    ])
    filters = compile_policy(member, PARAMS, None, None, client).decide("Observation", "search").filters
    # (lab or vital) and (a or b), as an OR of ANDs.
    assert filters == (
        (("category", "laboratory"), ("subject", "Patient/a")),
        (("category", "laboratory"), ("subject", "Patient/b")),
        (("category", "vital-signs"), ("subject", "Patient/a")),
        (("category", "vital-signs"), ("subject", "Patient/b")),
    )


def test_client_policy_is_filled_with_the_members_parameters():
    client = validate_rules([{"resourceType": "Observation", "criteria": "Observation?performer=%profile"}])
    params = {"patient": PATIENT, "profile": "Practitioner/d1"}
    decision = compile_policy(None, params, None, None, client).decide("Observation", "search")
    assert decision.filters == ((("performer", "Practitioner/d1"),),)


def test_hidden_and_readonly_fields_are_the_union_of_both_sides():
    policy = compile_policy(PATIENT_POLICY, PARAMS, None, None, CLIENT_POLICY)
    assert policy.hidden_fields("Observation") == ("note", "interpretation")
    assert policy.readonly_fields("Observation") == ("status",)
    assert policy.hidden_fields("Patient") == ()


def test_hidden_fields_survive_a_rule_narrowed_away():
    """A rule whose interactions the scopes (or the other side) take away still hides its fields
    for the rules that remain: narrowing access must never uncover data."""
    rules = validate_rules([
        {"resourceType": "Patient", "interaction": ["read"], "hiddenFields": ["birthDate"]},
        {"resourceType": "Patient", "interaction": ["search"]},
    ])
    by_scope = compile_policy(rules, PARAMS, ["user/Patient.s"])
    assert by_scope.decide("Patient", "search").outcome == "allowed"
    assert by_scope.hidden_fields("Patient") == ("birthDate",)
    by_client = compile_policy(rules, PARAMS, None, None, validate_rules([{"resourceType": "Patient",
                                                                             "interaction": ["search"]}]))
    assert by_client.decide("Patient", "read").outcome == "forbidden"
    assert by_client.hidden_fields("Patient") == ("birthDate",)


def test_scopes_narrow_the_combined_policy():
    policy = compile_policy(None, PARAMS, ["patient/Observation.rs"], PATIENT, CLIENT_POLICY)
    assert policy.decide("Observation", "search").filters == (
        (("category", "laboratory"), (COMPARTMENT_PARAM, PATIENT)),)
    assert policy.decide("Patient", "read").outcome == "forbidden"


def test_an_invalid_client_policy_grants_nothing():
    policy = compile_policy(None, PARAMS, None, None, [{"resourceType": "Observation", "interaction": ["write"]}])
    assert policy.grants == ()


def test_compiled_policies_are_keyed_by_the_client_rules_too():
    alone = compile_policy(PATIENT_POLICY, PARAMS)
    combined = compile_policy(PATIENT_POLICY, PARAMS, None, None, CLIENT_POLICY)
    assert combined is not alone
    assert alone.decide("Questionnaire", "read").outcome == "allowed"
    assert combined.decide("Questionnaire", "read").outcome == "forbidden"


def test_login_inputs_of_a_member_through_a_client(settings):
    from types import SimpleNamespace

    from medplum_auth.access import login_inputs

    def member(policy):
        return SimpleNamespace(access_policy=policy, profile=PATIENT, profile_type="Patient",
                               policy_parameters=lambda: dict(PARAMS))

    client = SimpleNamespace(access_policy=SimpleNamespace(resources=CLIENT_POLICY), reference="ClientApplication/c")
    inputs = login_inputs(membership=member(SimpleNamespace(resources=PATIENT_POLICY)), client=client)
    assert (inputs.rules, inputs.client_rules, inputs.patient) == (PATIENT_POLICY, CLIENT_POLICY, PATIENT)
    assert inputs.unreachable_scopes(["openid", "patient/Observation.rs", "patient/Condition.rs", "patient/*.r",
                                      "user/Patient.c", "user/Patient.cr"]) == \
        ["patient/Condition.rs", "user/Patient.c"]
    assert login_inputs(membership=member(None), client=SimpleNamespace(access_policy=None)).client_rules is None
    settings.MEDPLUM_AUTH = {"CLIENT_POLICY_RESTRICTS_USERS": False}
    assert login_inputs(membership=member(None), client=client).client_rules is None
    # A client acting for itself: its own policy, with itself as %profile and %patient.
    own = login_inputs(client=client)
    assert (own.rules, own.client_rules, own.parameters["patient"]) == (CLIENT_POLICY, None, "ClientApplication/c")


def test_policy_document_of_the_combined_rules():
    from medplum_auth.access import LoginInputs

    document = LoginInputs(PATIENT_POLICY, PARAMS, PATIENT, CLIENT_POLICY).document()
    assert document == [
        {"resourceType": "Patient", "criteria": "Patient?_id=p1", "interaction": ["read"]},
        {"resourceType": "Observation", "criteria": "Observation?subject=Patient/p1&category=laboratory",
         "interaction": ["read", "search"], "hiddenFields": ["note", "interpretation"], "readonlyFields": ["status"]},
    ]
    # Each rule of the document means what it says: compiled alone it decides as the two sides do.
    again = compile_policy(document, PARAMS)
    both = compile_policy(PATIENT_POLICY, PARAMS, None, None, CLIENT_POLICY)
    for resource_type in ("Patient", "Observation", "Condition", "Questionnaire"):
        for interaction in ("read", "search", "update"):
            assert again.decide(resource_type, interaction) == both.decide(resource_type, interaction)
    assert LoginInputs(None, PARAMS, None).document() == [{"resourceType": "*"}]
