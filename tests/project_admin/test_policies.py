"""Access policies: validation messages, nothing saved on error, usage, and the preview (= access.explain)."""

from __future__ import annotations

import html
import json
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from medplum_auth import policies
from medplum_auth.access import compile_policy, explain, parse_request_line
from medplum_auth.models import AccessPolicy
from tests.factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory

from .conftest import text, url

pytestmark = pytest.mark.django_db


def parse_message(value: str) -> list[str]:
    try:
        policies.parse_policy_json(value)
    except ValidationError as exc:
        return exc.messages
    raise AssertionError("the policy parsed")


@pytest.mark.parametrize("rules", [
    "[{",
    "{}",
    '[{"resourceType": "Observation", "interaction": ["peek"]}]',
    '[{"resourceType": "Observation", "criteria": "Patient?x=1"}]',
    '[{"resourceType": "observation"}]',
    '[{"resourceType": "Observation", "criteria": "Observation?_has:Patient:x=1"}]',
    '[{"resourceType": "Patient", "hiddenFields": ["Bad Path"]}, {"resourceType": "*", "color": 1}]',
])
def test_policy_json_errors_are_shown_and_nothing_is_saved(pa, project, rules):
    response = pa.post(url("policy-create", project), {"name": "Broken", "description": "", "resources": rules})
    assert response.status_code == 400
    expected = parse_message(rules)
    assert response.context["form"].errors["resources"] == expected
    page = text(response)
    for message in expected:
        assert html.escape(message) in page
    assert html.escape(rules) in page  # the submitted text is kept
    assert "Nothing was saved" in page
    assert not AccessPolicy.objects.filter(project=project).exists()


RULE = '[{"resourceType": "Patient", "interaction": ["read"]}]'


def test_policy_name_required_and_unique_per_project(pa, project, other_project, patient_policy):
    response = pa.post(url("policy-create", project), {"name": "", "resources": "[]"})
    assert response.context["form"].errors["name"] == ["This field is required."]
    response = pa.post(url("policy-create", project), {"name": patient_policy.name, "resources": RULE})
    assert response.status_code == 400
    assert response.context["form"].errors["__all__"] == [
        "Access policy with this Project and Name already exists."]
    AccessPolicyFactory(project=other_project, name="Shared name")
    ok = pa.post(url("policy-create", project), {"name": "Shared name", "resources": RULE})
    assert ok.status_code == 303


def test_create_policy_normalises_and_confirms(pa, project):
    rules = [{"resourceType": "Observation", "criteria": "Observation?subject=%patient", "readonly": True}]
    response = pa.post(url("policy-create", project), {"name": "Read own labs", "description": "",
                                                       "resources": json.dumps(rules)})
    assert response.status_code == 303
    policy = AccessPolicy.objects.get(project=project, name="Read own labs")
    assert policy.resources == policies.validate_rules(rules)
    page = pa.get(response["Location"])
    body = text(page)
    assert "Access policy “Read own labs” created." in body
    assert "Rules as saved, one row per rule" in body
    assert [row["resource_type"] for row in page.context["rows"]] == ["Observation"]
    assert dict(page.context["rows"][0]["interactions"]) == {
        "create": False, "read": True, "vread": True, "update": False, "delete": False, "history": True,
        "search": True}


def test_edit_policy_error_keeps_the_saved_rules(pa, project, patient_policy):
    before = patient_policy.resources
    response = pa.post(url("policy", project, patient_policy.pk),
                       {"name": "Renamed", "description": "", "resources": '[{"resourceType": 3}]'})
    assert response.status_code == 400
    assert response.context["form"].errors["resources"] == parse_message('[{"resourceType": 3}]')
    patient_policy.refresh_from_db()
    assert patient_policy.name == "Patient self-access" and patient_policy.resources == before
    assert 'value="Renamed"' in text(response)
    response = pa.post(url("policy", project, patient_policy.pk),
                       {"name": "Renamed", "description": "", "resources": '[{"resourceType": "Patient"}]'})
    assert response.status_code == 303
    patient_policy.refresh_from_db()
    assert patient_policy.name == "Renamed" and patient_policy.resources[0]["resourceType"] == "Patient"


def test_policy_page_lists_who_uses_it(pa, project, patient_policy):
    ClientApplicationFactory(project=project, name="Portal app", access_policy=patient_policy)
    MembershipFactory(project=project, profile_display="Pat Lee", access_policy=patient_policy)
    body = text(pa.get(url("policy", project, patient_policy.pk)))
    assert "Portal app" in body and "Pat Lee" in body
    listing = pa.get(url("policies", project))
    row = next(p for p in listing.context["policies"] if p.pk == patient_policy.pk)
    assert (row.client_count, row.member_count) == (1, 1)


# --- Preview ----------------------------------------------------------------------------------

POLICIES: dict[str, list[dict[str, Any]] | None] = {
    "patient self-access": [
        {"resourceType": "Patient", "criteria": "Patient?_id=%patient.id", "interaction": ["read"]},
        {"resourceType": "Observation", "criteria": "Observation?subject=%patient",
         "interaction": ["read", "search"], "hiddenFields": ["note"]},
    ],
    "practitioner read-all": [{"resourceType": "*", "readonly": True}],
    "wildcard with write on Task": [
        {"resourceType": "*", "interaction": ["read", "search"]},
        {"resourceType": "Task", "interaction": ["create", "update"]},
    ],
    "no policy (full access)": None,
    "empty policy": [],
}
REQUESTS = [
    "GET Observation?subject=Patient/456",
    "GET Observation/1",
    "GET Patient/123",
    "PUT Patient/123",
    "POST Task",
    "DELETE Observation/9",
    "GET /fhir/R4/Encounter",
    "GET Observation/1/_history/2",
    "FETCH something",
]
SCOPES = ["", "patient/Observation.rs", "user/*.cruds openid", "patient/*.r"]


def expected_answer(rules: list[dict[str, Any]] | None, params: dict[str, str], scopes: str, patient: str | None,
                    line: str) -> tuple[str, str]:
    effective = compile_policy(rules, params, scopes.split(), patient)
    try:
        decision = explain(effective, line)
    except ValueError as exc:
        return "invalid", str(exc)
    return decision.outcome, decision.reason


@pytest.mark.parametrize("name", list(POLICIES))
@pytest.mark.parametrize("scopes", SCOPES)
def test_preview_of_a_patient_member_equals_access_explain(pa, project, name, scopes):
    rules = POLICIES[name]
    policy = (AccessPolicyFactory(project=project, name=name, resources=policies.validate_rules(rules))
              if rules is not None else None)
    member = MembershipFactory(project=project, profile_type="Patient", profile_id="123", access_policy=policy,
                               profile_display="Pat Lee")
    response = pa.get(url("preview", project), {"subject": f"member:{member.pk}", "scopes": scopes,
                                                 "requests": "\n".join(REQUESTS)})
    assert response.status_code == 200, response.context["form"].errors
    preview = response.context["preview"]
    params = member.policy_parameters()
    effective = compile_policy(policy.resources if policy else None, params, scopes.split(), "Patient/123")
    assert preview.lines == effective.describe()
    body = text(response)
    for line in preview.lines:
        assert html.escape(line) in body
    got = [(a.decision.outcome, a.decision.reason) if a.decision else ("invalid", a.error) for a in preview.answers]
    want = [expected_answer(policy.resources if policy else None, params, scopes, "Patient/123", line)
            for line in REQUESTS]
    assert got == want
    for outcome, reason in want:
        assert html.escape(reason) in body
        if outcome != "invalid":
            assert f'<span class="outcome {outcome}">{outcome}</span>' in body


def test_preview_words_for_a_patient(pa, project, patient_policy):
    member = MembershipFactory(project=project, profile_type="Patient", profile_id="123",
                               access_policy=patient_policy)
    response = pa.get(url("preview", project), {"subject": f"member:{member.pk}", "requests":
                                                 "GET Observation?subject=Patient/456\nDELETE Observation/1"})
    preview = response.context["preview"]
    assert preview.lines == ["May read Patient where _id = 123",
                             "May read and search Observation where subject = Patient/123"]
    outcomes = [a.decision.outcome for a in preview.answers]
    assert outcomes == ["filtered", "forbidden"]


def test_preview_of_a_practitioner_uses_the_given_patient_context(pa, project):
    member = MembershipFactory(project=project, profile_type="Practitioner", profile_id="p1")
    response = pa.get(url("preview", project), {"subject": f"member:{member.pk}", "scopes": "patient/*.rs",
                                                 "patient": "Patient/777", "requests": "GET Condition"})
    preview = response.context["preview"]
    effective = compile_policy(None, member.policy_parameters(), ["patient/*.rs"], "Patient/777")
    assert preview.lines == effective.describe()
    assert preview.answers[0].decision == explain(effective, "GET Condition")


def test_preview_of_a_client_acting_for_itself(pa, project, patient_policy):
    client = ClientApplicationFactory(project=project, access_policy=patient_policy)
    response = pa.get(url("preview", project), {"subject": f"client:{client.pk}", "requests": "GET Observation"})
    preview = response.context["preview"]
    params = {"profile": client.reference, "patient": client.reference}
    effective = compile_policy(patient_policy.resources, params, [], None)
    assert preview.lines == effective.describe()
    assert preview.answers[0].decision == explain(effective, "GET Observation")


def test_preview_of_a_policy_on_its_own(pa, project, patient_policy):
    response = pa.get(url("preview", project), {"subject": f"policy:{patient_policy.pk}", "profile": "Patient/42",
                                                 "requests": "GET Patient/42"})
    preview = response.context["preview"]
    effective = compile_policy(patient_policy.resources, {"profile": "Patient/42", "patient": "Patient/42"}, [],
                               "Patient/42")
    assert preview.lines == effective.describe()
    assert preview.answers[0].decision == explain(effective, "GET Patient/42")


def test_preview_validation(pa, project, admin_member):
    response = pa.get(url("preview", project), {"subject": f"member:{admin_member.pk}", "patient": "123"})
    assert response.status_code == 400
    assert response.context["form"].errors["patient"] == ["Enter a reference like Patient/123."]
    assert response.context["preview"] is None
    empty = pa.get(url("preview", project))
    assert empty.status_code == 200 and empty.context["preview"] is None
    missing = pa.get(url("preview", project), {"scopes": "openid"})
    assert missing.context["form"].errors["subject"] == ["This field is required."]


def test_request_lines_table_covers_parse_errors():
    with pytest.raises(ValueError):
        parse_request_line("FETCH something")


# --- a member through a client ------------------------------------------------------------------

@pytest.fixture
def patient_only_client(project):
    policy = AccessPolicyFactory(project=project, name="Patients only",
                                 resources=[{"resourceType": "Patient", "interaction": ["read", "search"]}])
    return ClientApplicationFactory(project=project, name="Chart app", access_policy=policy)


def test_preview_of_a_member_through_a_client_is_what_the_api_enforces(pa, project, patient_only_client):
    from medplum_auth.access import login_inputs

    member = MembershipFactory(project=project, profile_type="Practitioner", profile_id="d1")
    response = pa.get(url("preview", project), {
        "subject": f"member:{member.pk}", "through": str(patient_only_client.pk),
        "requests": "GET Observation\nGET Patient/1\nPUT Patient/1"})
    assert response.status_code == 200, response.context["form"].errors
    preview = response.context["preview"]
    effective = login_inputs(membership=member, client=patient_only_client).compile()
    assert preview.lines == effective.describe() == ["May read and search Patient"]
    assert [a.decision for a in preview.answers] == [explain(effective, line) for line in
                                                     ("GET Observation", "GET Patient/1", "PUT Patient/1")]
    assert [a.decision.outcome for a in preview.answers] == ["forbidden", "allowed", "forbidden"]
    # Which side forbade: the member has no policy, so the client's did.
    assert [[(side, d.outcome) for side, d in a.sides] for a in preview.answers] == [
        [("member's policy", "allowed"), ("client's policy", "forbidden")],
        [("member's policy", "allowed"), ("client's policy", "allowed")],
        [("member's policy", "allowed"), ("client's policy", "forbidden")],
    ]
    assert preview.answers[0].decided_by == ["client's policy"]
    body = text(response)
    assert "Forbidden by the client&#x27;s policy." in body
    assert "restricts this login too" in body


def test_preview_names_the_side_that_filters(pa, project, patient_policy, patient_only_client):
    member = MembershipFactory(project=project, profile_type="Patient", profile_id="123",
                               access_policy=patient_policy)
    response = pa.get(url("preview", project), {"subject": f"member:{member.pk}",
                                                 "through": str(patient_only_client.pk),
                                                 "requests": "GET Patient/123\nGET Observation"})
    answers = response.context["preview"].answers
    assert [(a.decision.outcome, a.decided_by) for a in answers] == [
        ("filtered", ["member's policy"]), ("forbidden", ["client's policy"])]


def test_preview_through_a_client_without_policy_adds_nothing(pa, project):
    member = MembershipFactory(project=project, profile_type="Practitioner")
    app = ClientApplicationFactory(project=project, name="Open app")
    response = pa.get(url("preview", project), {"subject": f"member:{member.pk}", "through": str(app.pk),
                                                 "requests": "DELETE Observation/1"})
    preview = response.context["preview"]
    assert preview.sides == [] and preview.answers[0].decision.outcome == "allowed"
    assert "no client policy, no extra restriction" in text(response)


def test_preview_says_when_the_setting_keeps_medplums_behaviour(pa, project, patient_only_client, settings):
    settings.MEDPLUM_AUTH = {"CLIENT_POLICY_RESTRICTS_USERS": False}
    member = MembershipFactory(project=project, profile_type="Practitioner")
    response = pa.get(url("preview", project), {"subject": f"member:{member.pk}",
                                                 "through": str(patient_only_client.pk), "requests": "GET Observation"})
    assert response.context["preview"].answers[0].decision.outcome == "allowed"
    assert "CLIENT_POLICY_RESTRICTS_USERS</code> is off" in text(response)


def test_preview_refuses_a_client_through_another_client(pa, project, patient_only_client):
    response = pa.get(url("preview", project), {"subject": f"client:{patient_only_client.pk}",
                                                 "through": str(patient_only_client.pk)})
    assert response.status_code == 400
    assert response.context["form"].errors["through"] == [
        "A client acting for itself does not sign in through another client."]


def test_preview_link_on_a_client_page_preselects_the_client(pa, project, patient_only_client):
    page = pa.get(url("client", project, patient_only_client.pk))
    body = text(page)
    assert "restricts the app for every user who signs in through it" in body
    link = f'{url("preview", project)}?through={patient_only_client.pk}'
    assert link in body
    preview = pa.get(link)
    assert preview.status_code == 200
    assert preview.context["form"]["through"].value() == str(patient_only_client.pk)
    assert preview.context["preview"] is None


def test_preview_through_a_client_names_the_scopes_when_they_decide(pa, project, patient_only_client):
    member = MembershipFactory(project=project, profile_type="Practitioner")
    response = pa.get(url("preview", project), {"subject": f"member:{member.pk}", "scopes": "user/Observation.rs",
                                                 "through": str(patient_only_client.pk),
                                                 "requests": "GET Patient\nGET Observation"})
    answers = response.context["preview"].answers
    assert [[side for side, _d in a.sides] for a in answers] == [["member's policy", "client's policy", "scopes"]] * 2
    assert [(a.decision.outcome, a.decided_by) for a in answers] == [
        ("forbidden", ["scopes"]), ("forbidden", ["client's policy"])]
    assert "Forbidden by the scopes." in text(response)
