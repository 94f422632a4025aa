"""Tokens from the real flows on the FHIR API; profile resources created on invite (fhirUser)."""

from __future__ import annotations

import pytest

from fhir_api.models import Resource
from medplum_auth import services
from tests.factories import DEFAULT_PASSWORD, AccessPolicyFactory, ClientApplicationFactory, ProjectFactory
from tests.fhir.conftest import PATIENT_POLICY, Api, assert_outcome, observation, seed
from tests.oauth.conftest import REDIRECT_URI, Flow, basic_auth, id_token_claims, post_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic(db):
    return ProjectFactory(name="Clinic")


def invite(project, email: str, profile_type: str = "Patient", **kwargs):
    return services.invite_member(project, email, profile_type=profile_type, first_name="Pat", last_name="Lee",
                                  password=DEFAULT_PASSWORD, **kwargs).membership


@pytest.mark.parametrize("profile_type", ["Patient", "Practitioner"])
def test_invite_creates_the_profile_resource(clinic, profile_type):
    membership = invite(clinic, "new@example.org", profile_type)
    row = Resource.objects.get(project=clinic, resource_type=profile_type, resource_id=membership.profile_id)
    assert row.content["name"] == [{"given": ["Pat"], "family": "Lee"}]
    assert row.content["telecom"] == [{"system": "email", "use": "work", "value": "new@example.org"}]
    assert row.version_id == 1 and row.content["meta"]["versionId"] == "1"
    if profile_type == "Patient":
        assert row.patient == membership.profile


def test_related_person_gets_the_patient_parameter(clinic):
    patient = invite(clinic, "child@example.org")
    related = invite(clinic, "parent@example.org", "RelatedPerson", access_parameters={"patient": patient.profile})
    row = Resource.objects.get(resource_type="RelatedPerson", resource_id=related.profile_id)
    assert row.content["patient"] == {"reference": patient.profile}
    assert row.patient == patient.profile
    unlinked = invite(clinic, "other@example.org", "RelatedPerson")
    assert Resource.objects.filter(resource_type="RelatedPerson", resource_id=unlinked.profile_id).exists()


@pytest.mark.spec("SMART App Launch 2.2 §2.0.2 (fhirUser), context-standalone-patient, permission-patient")
def test_standalone_patient_launch_reads_fhir_user_and_own_data(client, clinic):
    policy = AccessPolicyFactory(project=clinic, name="Patients", resources=PATIENT_POLICY)
    me = invite(clinic, "pat@example.org", access_policy=policy)
    other = invite(clinic, "other@example.org", access_policy=policy)
    mine = seed(clinic, observation(me.profile))["id"]
    theirs = seed(clinic, observation(other.profile))["id"]
    app = ClientApplicationFactory(project=clinic, public=True, redirect_uris=REDIRECT_URI)
    flow = Flow(client, app)
    tokens = flow.tokens(scope="openid fhirUser launch/patient patient/*.rs")
    assert tokens["patient"] == me.profile_id
    fhir_user = id_token_claims(tokens["id_token"])["fhirUser"]
    assert fhir_user == f"http://127.0.0.1:8000/fhir/R4/{me.profile}"
    api = Api(client, tokens["access_token"])
    profile = client.get(fhir_user.removeprefix("http://127.0.0.1:8000"),
                         HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}")
    assert profile.status_code == 200 and profile.json()["id"] == me.profile_id
    assert api.get(f"/Patient/{tokens['patient']}").status_code == 200
    found = {e["resource"]["id"] for e in api.get("/Observation", {"patient": tokens["patient"]}).json()["entry"]}
    assert found == {mine}
    assert_outcome(api.get(f"/Observation/{theirs}"), 404, "not-found")
    assert_outcome(api.get(f"/Patient/{other.profile_id}"), 404, "not-found")
    assert_outcome(api.post("/Observation", observation(me.profile)), 403, "forbidden")


@pytest.mark.spec("SMART App Launch 2.2 §5 (backend services)")
def test_client_credentials_token_from_the_token_endpoint(client, clinic):
    app = ClientApplicationFactory(project=clinic)
    elsewhere = ProjectFactory(name="Elsewhere")
    seed(elsewhere, {"resourceType": "Organization", "name": "Hidden"}, resource_id="org-x")
    seed(clinic, {"resourceType": "Organization", "name": "Visible"}, resource_id="org-1")
    response = post_form(client, "/oauth2/token", {"grant_type": "client_credentials", "scope": "system/*.rs"},
                         HTTP_AUTHORIZATION=basic_auth(app.client_id, app.plaintext_secret))
    assert response.status_code == 200, response.content
    api = Api(client, response.json()["access_token"])
    assert api.get("/Organization/org-1").status_code == 200
    assert_outcome(api.get("/Organization/org-x"), 404, "not-found")
    assert {e["resource"]["id"] for e in api.get("/Organization").json()["entry"]} == {"org-1"}
    assert_outcome(api.post("/Organization", {"resourceType": "Organization"}), 403, "forbidden")


def test_logout_revokes_api_access(client, clinic):
    invite(clinic, "pat@example.org")
    app = ClientApplicationFactory(project=clinic, public=True, redirect_uris=REDIRECT_URI)
    tokens = Flow(client, app).tokens(scope="openid")
    api = Api(client, tokens["access_token"])
    assert api.get("/Patient").status_code == 200
    assert client.post("/oauth2/logout", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}").status_code in (
        200, 204, 302)
    assert_outcome(api.get("/Patient"), 401, "login")
