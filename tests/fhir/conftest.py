"""Fixtures for the FHIR API: two projects, two patients, tokens and a small API client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.utils import timezone

from fhir_api.repository import Repository
from medplum_auth import tokens
from medplum_auth.models import Login
from tests.factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory, ProjectFactory

FHIR = "/fhir/R4"
FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"

# The demo's patient policy (medplum_seed_demo), with every interaction a patient app may try.
PATIENT_POLICY: list[dict[str, Any]] = [
    {"resourceType": "Patient", "criteria": "Patient?_id=%patient.id"},
    {"resourceType": "Observation", "criteria": "Observation?subject=%patient"},
    {"resourceType": "Condition", "criteria": "Condition?subject=%patient"},
]


def mint(*, client: Any, membership: Any = None, scope: str = "openid", lifetime: int = 300) -> str:
    """An access token for a new login: a member's (code flow) or the client's own (client_credentials)."""
    now = timezone.now()
    login = Login.objects.create(
        user=membership.user if membership else None, client=client, project=client.project, membership=membership,
        auth_method=Login.Method.PASSWORD if membership else Login.Method.CLIENT, auth_time=now, scope=scope,
        granted_at=now,
    )
    subject = str(membership.user_id) if membership else client.client_id
    return tokens.issue_access_token(subject=subject, client_id=client.client_id, login_id=str(login.pk),
                                     scope=scope, profile=login.profile, lifetime=lifetime)


class Api:
    """The Django test client speaking FHIR JSON with a Bearer token."""

    def __init__(self, client: Any, token: str | None):
        self.client = client
        self.token = token

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = {"HTTP_ACCEPT": FHIR_JSON, **extra}
        if self.token:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        return headers

    def get(self, path: str, params: Any = None, **extra: str):
        return self.client.get(FHIR + path, params or {}, **self._headers(extra))

    def post(self, path: str, body: Any, content_type: str = FHIR_JSON, **extra: str):
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return self.client.post(FHIR + path, data, content_type=content_type, **self._headers(extra))

    def put(self, path: str, body: Any, content_type: str = FHIR_JSON, **extra: str):
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return self.client.put(FHIR + path, data, content_type=content_type, **self._headers(extra))

    def patch(self, path: str, body: Any, content_type: str = JSON_PATCH, **extra: str):
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return self.client.patch(FHIR + path, data, content_type=content_type, **self._headers(extra))

    def delete(self, path: str, **extra: str):
        return self.client.delete(FHIR + path, **self._headers(extra))

    def options(self, path: str, **extra: str):
        return self.client.options(FHIR + path, **self._headers(extra))


def seed(project: Any, content: dict[str, Any], resource_id: str | None = None) -> dict[str, Any]:
    """Store a resource as the system would (no policy); its stored content."""
    return Repository(project.pk, None).create(content["resourceType"], content, resource_id=resource_id).content


def observation(patient: str, code: str = "8867-4", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}], "text": f"code {code}"},
            "subject": {"reference": patient}, **extra}


def condition(patient: str, code: str = "38341003") -> dict[str, Any]:
    return {"resourceType": "Condition", "subject": {"reference": patient},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]}}


def assert_outcome(response: Any, status: int, code: str, expression: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.content)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    issue = body["issue"][0]
    assert issue["severity"] == "error"
    assert issue["code"] == code, body
    assert issue["details"]["text"]
    if expression is not None:
        assert expression in issue.get("expression", []), body
    return body


@pytest.fixture
def project1(db):
    return ProjectFactory(name="Project one")


@pytest.fixture
def project2(db):
    return ProjectFactory(name="Project two")


@pytest.fixture
def app1(project1):
    return ClientApplicationFactory(project=project1, name="App one")


@pytest.fixture
def app2(project2):
    return ClientApplicationFactory(project=project2, name="App two")


@pytest.fixture
def patient_policy(project1):
    return AccessPolicyFactory(project=project1, name="Patient policy", resources=PATIENT_POLICY)


@pytest.fixture
def alice(project1, patient_policy):
    """Patient A of project 1, under the demo-style patient policy, with her data."""
    membership = MembershipFactory(project=project1, profile_type="Patient", access_policy=patient_policy)
    seed(project1, {"resourceType": "Patient", "name": [{"family": "Anders", "given": ["Alice"]}],
                    "identifier": [{"system": "urn:mrn", "value": "A-1"}]}, resource_id=membership.profile_id)
    return membership


@pytest.fixture
def bob(project1, patient_policy):
    """Patient B of project 1, same policy, with his data."""
    membership = MembershipFactory(project=project1, profile_type="Patient", access_policy=patient_policy)
    seed(project1, {"resourceType": "Patient", "name": [{"family": "Baker", "given": ["Bob"]}],
                    "identifier": [{"system": "urn:mrn", "value": "B-1"}]}, resource_id=membership.profile_id)
    return membership


@pytest.fixture
def practitioner(project1):
    """A practitioner without a policy: full access to project 1."""
    membership = MembershipFactory(project=project1, profile_type="Practitioner")
    seed(project1, {"resourceType": "Practitioner", "name": [{"family": "Doc"}]}, resource_id=membership.profile_id)
    return membership


@pytest.fixture
def full_api(client, app1):
    """client_credentials token of project 1 without a policy: everything in project 1."""
    return Api(client, mint(client=app1))


@pytest.fixture
def anonymous(client):
    return Api(client, None)


# The 14 types served before every R4 type was, and their parameters then: the matrix tests
# (every parameter finds what the Python check says, isolation) keep covering exactly these; the
# R4 data's other types and parameters are covered by tests/fhir/test_r4_types.py.
LEGACY_PARAMS: dict[str, tuple[str, ...]] = {
    "Patient": ("identifier", "name", "family", "given", "birthdate", "gender", "active", "organization",
                "general-practitioner"),
    "Practitioner": ("identifier", "name", "family", "given", "gender", "active"),
    "RelatedPerson": ("identifier", "name", "family", "given", "gender", "active", "patient"),
    "Organization": ("identifier", "name", "active", "type"),
    "Encounter": ("identifier", "subject", "patient", "status", "class", "type", "participant", "service-provider",
                  "date"),
    "Observation": ("identifier", "subject", "patient", "encounter", "status", "code", "category", "performer", "date"),
    "Condition": ("identifier", "subject", "patient", "encounter", "code", "category", "clinical-status",
                  "verification-status", "onset-date", "recorded-date", "asserter"),
    "AllergyIntolerance": ("identifier", "patient", "encounter", "code", "category", "clinical-status",
                           "verification-status", "date", "recorder", "asserter"),
    "MedicationRequest": ("identifier", "subject", "patient", "encounter", "status", "intent", "category", "code",
                          "medication", "requester", "authoredon"),
    "Immunization": ("identifier", "patient", "encounter", "status", "vaccine-code", "performer", "date"),
    "Procedure": ("identifier", "subject", "patient", "encounter", "status", "code", "category", "performer", "date"),
    "DiagnosticReport": ("identifier", "subject", "patient", "encounter", "status", "code", "category", "performer",
                         "date"),
    "DocumentReference": ("identifier", "subject", "patient", "encounter", "status", "type", "category", "author",
                          "date"),
    "CarePlan": ("identifier", "subject", "patient", "encounter", "status", "intent", "category", "date"),
}


def legacy_parameters() -> dict[str, dict[str, Any]]:
    """``SEARCH_PARAMETERS`` narrowed to :data:`LEGACY_PARAMS`."""
    from fhir_api.search_params import SEARCH_PARAMETERS

    return {t: {n: SEARCH_PARAMETERS[t][n] for n in names} for t, names in LEGACY_PARAMS.items()}
