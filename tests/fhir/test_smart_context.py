"""The SMART launch patient as the FHIR API's patient context.

An EHR launch (or the standalone patient picker) gives a Practitioner's token a patient context:
``patient/`` scopes are then confined to that patient's compartment, exactly as for a Patient
user's own record; ``user/`` scopes are not narrowed. ``fhirUser`` in the ID token resolves
through the API. Also: the patient picker's search honours the member's access policy.
"""

from __future__ import annotations

from typing import Any

import pytest

from fhir_api.launch import search_patients
from medplum_auth import services
from medplum_auth.bearer import authenticate
from medplum_auth.conf import auth_settings
from medplum_auth.contrib.rest_framework.policy import effective_policy_for, patient_context
from tests.factories import DEFAULT_PASSWORD, AccessPolicyFactory, ClientApplicationFactory, MembershipFactory
from tests.fhir.conftest import Api, observation, seed
from tests.oauth.conftest import REDIRECT_URI, Flow, id_token_claims, query

LAUNCH_URI = "https://app.example.org/launch"


@pytest.fixture
def smart_app(project1):
    return ClientApplicationFactory(project=project1, public=True, redirect_uris=REDIRECT_URI,
                                    launch_uri=LAUNCH_URI, name="SMART app")


@pytest.fixture
def data(project1, alice, bob) -> dict[str, str]:
    """One Observation each for Alice and Bob."""
    return {"alice_obs": seed(project1, observation(alice.profile))["id"],
            "bob_obs": seed(project1, observation(bob.profile))["id"]}


def tokens_for(client: Any, app: Any, member: Any, **params: str) -> dict[str, Any]:
    """The code flow for ``member`` (signing in, picking, consenting); the token response."""
    flow = Flow(client, app)
    response = flow.authorize(**params)
    if response["Location"].startswith("/oauth2/signin"):
        response = flow.sign_in(response, email=member.user.email)
    response = flow.follow(response)
    if response.status_code == 302 and response["Location"].startswith("/oauth2/patient"):
        return {"picker": query(response["Location"])["rid"], "flow": flow}
    assert response.status_code == 302 and response["Location"].startswith(REDIRECT_URI), response
    token = flow.token(query(response["Location"])["code"])
    assert token.status_code == 200, token.content
    return token.json()


def ehr_tokens(client, app, member, patient_ref: str, scope: str) -> dict[str, Any]:
    launch = services.create_launch(app, patient_ref, encounter="Encounter/enc-1", created_by=member.user)
    return tokens_for(client, app, member, scope=f"openid fhirUser launch {scope}", launch=str(launch.pk))


def ids(bundle: dict[str, Any]) -> set[str]:
    return {entry["resource"]["id"] for entry in bundle.get("entry", [])}


@pytest.mark.spec("SMART App Launch 2.2 §scopes-and-launch-context")
def test_ehr_launch_confines_patient_scopes_to_the_launch_patient(client, smart_app, practitioner, alice, bob, data):
    body = ehr_tokens(client, smart_app, practitioner, alice.profile, "patient/*.cruds")
    assert body["patient"] == alice.profile_id and body["encounter"] == "enc-1"
    api = Api(client, body["access_token"])
    assert ids(api.get("/Observation").json()) == {data["alice_obs"]}
    assert api.get(f"/Observation/{data['alice_obs']}").status_code == 200
    assert api.get(f"/Observation/{data['bob_obs']}").status_code == 404
    assert api.get(f"/Patient/{alice.profile_id}").status_code == 200
    assert api.get(f"/Patient/{bob.profile_id}").status_code == 404
    assert ids(api.get("/Patient").json()) == {alice.profile_id}
    assert api.post("/Observation", observation(alice.profile)).status_code == 201
    assert api.post("/Observation", observation(bob.profile)).status_code == 403
    assert api.delete(f"/Observation/{data['bob_obs']}").status_code == 404


def test_without_a_launch_a_practitioners_patient_scopes_grant_nothing(client, smart_app, practitioner, data):
    body = tokens_for(client, smart_app, practitioner, scope="openid patient/*.rs")
    assert "patient" not in body
    api = Api(client, body["access_token"])
    assert api.get("/Observation").status_code == 403
    assert api.get(f"/Observation/{data['alice_obs']}").status_code == 403


def test_user_scopes_are_not_narrowed_by_the_launch(client, smart_app, practitioner, alice, data):
    body = ehr_tokens(client, smart_app, practitioner, alice.profile, "user/*.rs")
    api = Api(client, body["access_token"])
    assert ids(api.get("/Observation").json()) == {data["alice_obs"], data["bob_obs"]}


def test_launch_patient_and_access_policy_intersect(client, project1, smart_app, alice, bob, data):
    """A practitioner whose policy reaches only Bob gets nothing from a launch for Alice."""
    policy = AccessPolicyFactory(project=project1, name="Bob only", resources=[
        {"resourceType": "Observation", "criteria": f"Observation?subject={bob.profile}"}])
    member = MembershipFactory(project=project1, profile_type="Practitioner", access_policy=policy)
    body = ehr_tokens(client, smart_app, member, alice.profile, "patient/Observation.rs")
    api = Api(client, body["access_token"])
    assert api.get("/Observation").json()["total"] == 0
    assert api.get(f"/Observation/{data['bob_obs']}").status_code == 404


def test_standalone_picker_patient_is_the_context(client, smart_app, practitioner, alice, bob, data):
    started = tokens_for(client, smart_app, practitioner, scope="openid launch/patient patient/Observation.rs")
    flow, rid = started["flow"], started["picker"]
    page = client.get("/oauth2/patient", {"rid": rid, "q": "baker"})
    assert [row["id"] for row in page.context["results"]] == [bob.profile_id]
    response = flow.follow(client.post("/oauth2/patient", {"rid": rid, "patient": f"Patient/{bob.profile_id}"}))
    body = flow.token(query(response["Location"])["code"]).json()
    assert body["patient"] == bob.profile_id
    api = Api(client, body["access_token"])
    assert ids(api.get("/Observation").json()) == {data["bob_obs"]}
    assert api.get(f"/Observation/{data['alice_obs']}").status_code == 404


def test_patient_context_helpers(client, smart_app, practitioner, alice):
    body = ehr_tokens(client, smart_app, practitioner, alice.profile, "patient/*.rs")
    context = authenticate(body["access_token"])
    assert patient_context(context) == alice.profile
    assert any(("_compartment", alice.profile) in grant.criteria for grant in effective_policy_for(context).grants)


# --- fhirUser resolves through the API --------------------------------------------------------

@pytest.mark.spec("SMART App Launch 2.2 §fhirUser")
def test_patient_fhir_user_resolves(client, smart_app, alice):
    body = tokens_for(client, smart_app, alice, scope="openid fhirUser patient/*.rs")
    fhir_user = id_token_claims(body["id_token"])["fhirUser"]
    assert fhir_user == f"{auth_settings.fhir_base_url}/{alice.profile}"
    response = Api(client, body["access_token"]).get(fhir_user.removeprefix(auth_settings.fhir_base_url))
    assert response.status_code == 200, response.content
    assert (response.json()["resourceType"], response.json()["id"]) == ("Patient", alice.profile_id)


def test_practitioner_fhir_user_resolves(client, smart_app, practitioner, alice):
    body = ehr_tokens(client, smart_app, practitioner, alice.profile, "user/Practitioner.rs")
    fhir_user = id_token_claims(body["id_token"])["fhirUser"]
    response = Api(client, body["access_token"]).get(fhir_user.removeprefix(auth_settings.fhir_base_url))
    assert response.status_code == 200, response.content
    assert (response.json()["resourceType"], response.json()["id"]) == ("Practitioner", practitioner.profile_id)


def test_invited_member_fhir_user_resolves(client, project1, smart_app):
    """Invites create the profile resource, so fhirUser resolves for real members too."""
    invitation = services.invite_member(project1, "new.doc@example.org", profile_type="Practitioner",
                                        first_name="New", last_name="Doc", password=DEFAULT_PASSWORD)
    body = tokens_for(client, smart_app, invitation.membership, scope="openid fhirUser user/*.rs")
    fhir_user = id_token_claims(body["id_token"])["fhirUser"]
    resource = Api(client, body["access_token"]).get(fhir_user.removeprefix(auth_settings.fhir_base_url)).json()
    assert resource["name"][0]["family"] == "Doc"


# --- the patient picker's search --------------------------------------------------------------

def test_search_patients_uses_the_members_policy(project1, alice, bob, practitioner):
    assert {row["id"] for row in search_patients(practitioner)} == {alice.profile_id, bob.profile_id}
    assert search_patients(practitioner, query="alice anders") == [{"id": alice.profile_id,
                                                                  "display": "Alice Anders"}]
    assert search_patients(practitioner, patient_id=bob.profile_id)[0]["id"] == bob.profile_id
    assert search_patients(practitioner, patient_id="missing") == []
    policy = AccessPolicyFactory(project=project1, name="Alice only", resources=[
        {"resourceType": "Patient", "criteria": f"Patient?_id={alice.profile_id}"}])
    limited = MembershipFactory(project=project1, profile_type="Practitioner", access_policy=policy)
    assert [row["id"] for row in search_patients(limited)] == [alice.profile_id]
    assert search_patients(limited, patient_id=bob.profile_id) == []
    no_patients = AccessPolicyFactory(project=project1, name="No patients", resources=[
        {"resourceType": "Observation"}])
    blind = MembershipFactory(project=project1, profile_type="Practitioner", access_policy=no_patients)
    assert search_patients(blind) == []


def test_search_patients_stays_in_the_project(project1, project2, alice):
    other = MembershipFactory(project=project2, profile_type="Practitioner")
    assert search_patients(other) == []
    assert search_patients(other, patient_id=alice.profile_id) == []
