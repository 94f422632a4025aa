"""A client's access policy restricts the users who sign in through it (member ∩ client policy).

Tokens come from the real code flow (sign-in page, consent, token endpoint), except where a test
is about client_credentials.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from fhir_api.models import Resource
from medplum_auth.conf import auth_settings
from tests.factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory
from tests.fhir.conftest import Api, assert_outcome, condition, mint, observation, seed
from tests.oauth.conftest import REDIRECT_URI, Flow

pytestmark = [pytest.mark.django_db, pytest.mark.spec("issue: client policy restricts users in every flow")]

PATIENT_READ_ONLY = [{"resourceType": "Patient", "interaction": ["read", "search"]}]
OBSERVATION_ONLY = [{"resourceType": "Observation", "interaction": ["read", "search"]}]


def app_with(project: Any, resources: list[dict[str, Any]] | None, name: str = "App"):
    policy = AccessPolicyFactory(project=project, name=f"{name} policy", resources=resources) if resources else None
    return ClientApplicationFactory(project=project, name=name, public=True, redirect_uris=REDIRECT_URI,
                                    access_policy=policy)


def user_api(client: Any, app: Any, membership: Any, scope: str = "openid") -> Api:
    """Sign ``membership``'s user in through ``app`` on the real pages; an Api with the access token."""
    client.logout()
    flow = Flow(client, app)
    response = flow.follow(flow.sign_in(flow.authorize(scope=scope), email=membership.user.email))
    assert response.status_code == 302 and response["Location"].startswith(REDIRECT_URI), response
    code = dict(p.split("=", 1) for p in response["Location"].split("?", 1)[1].split("&"))["code"]
    token = flow.token(code)
    assert token.status_code == 200, token.content
    return Api(client, token.json()["access_token"])


def ids(response: Any, mode: str = "match") -> set[str]:
    assert response.status_code == 200, response.content
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in response.json().get("entry", [])
            if e.get("search", {}).get("mode", "match") == mode}


@pytest.fixture
def data(project1, alice, bob):
    """Alice: a lab and a vital-signs Observation and a Condition; Bob: a lab Observation."""
    lab = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory"}]}]
    vital = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                          "code": "vital-signs"}]}]
    return {
        "alice_lab": "Observation/" + seed(project1, observation(alice.profile, category=lab,
                                                                 note=[{"text": "private"}],
                                                                 interpretation=[{"text": "high"}]))["id"],
        "alice_vital": "Observation/" + seed(project1, observation(alice.profile, category=vital))["id"],
        "alice_condition": "Condition/" + seed(project1, condition(alice.profile))["id"],
        "bob_lab": "Observation/" + seed(project1, observation(bob.profile, category=lab))["id"],
    }


def test_practitioner_through_a_patient_only_client_is_refused_observations(client, project1, practitioner, alice,
                                                                            data):
    api = user_api(client, app_with(project1, PATIENT_READ_ONLY), practitioner)
    assert_outcome(api.get("/Observation"), 403, "forbidden")
    assert_outcome(api.get(f"/{data['alice_lab']}"), 403, "forbidden")
    assert_outcome(api.get("/Condition"), 403, "forbidden")
    patient = api.get(f"/{alice.profile}")
    assert patient.status_code == 200 and patient.json()["id"] == alice.profile_id
    assert alice.profile in ids(api.get("/Patient"))
    # The client's policy allows read and search only: no writes through this app either.
    assert_outcome(api.put(f"/{alice.profile}", patient.json()), 403, "forbidden")


def test_same_practitioner_through_a_client_without_policy_reads_both(client, project1, practitioner, alice, data):
    api = user_api(client, app_with(project1, None), practitioner)
    assert ids(api.get("/Observation")) == {data["alice_lab"], data["alice_vital"], data["bob_lab"]}
    assert api.get(f"/{alice.profile}").status_code == 200


def test_patient_through_an_observation_only_client_sees_only_own_observations(client, project1, alice, bob, data):
    api = user_api(client, app_with(project1, OBSERVATION_ONLY), alice)
    assert ids(api.get("/Observation")) == {data["alice_lab"], data["alice_vital"]}
    assert api.get(f"/{data['alice_lab']}").status_code == 200
    assert_outcome(api.get(f"/{data['bob_lab']}"), 404, "not-found")  # the member's filter still applies
    assert_outcome(api.get(f"/{alice.profile}"), 403, "forbidden")  # the client's policy has no Patient
    assert_outcome(api.get("/Patient"), 403, "forbidden")
    assert_outcome(api.get("/Condition"), 403, "forbidden")


def test_patient_through_an_observation_only_client_with_smart_scopes(client, project1, alice, data):
    api = user_api(client, app_with(project1, OBSERVATION_ONLY), alice, scope="openid launch/patient patient/*.rs")
    assert ids(api.get("/Observation")) == {data["alice_lab"], data["alice_vital"]}
    assert_outcome(api.get(f"/{alice.profile}"), 403, "forbidden")


@pytest.fixture
def lab_practitioner(project1):
    """A practitioner whose own policy allows laboratory Observations and every Patient."""
    policy = AccessPolicyFactory(project=project1, name="Lab only", resources=[
        {"resourceType": "Observation", "criteria": "Observation?category=laboratory",
         "interaction": ["read", "search"], "hiddenFields": ["note"]},
        {"resourceType": "Patient", "interaction": ["read", "search"]},
    ])
    return MembershipFactory(project=project1, profile_type="Practitioner", access_policy=policy)


@pytest.fixture
def alice_app(project1, alice):
    """An app whose policy allows only Alice's record and Observations, hiding their interpretation."""
    return app_with(project1, [
        {"resourceType": "Observation", "criteria": f"Observation?subject={alice.profile}",
         "interaction": ["read", "search"], "hiddenFields": ["interpretation"]},
        {"resourceType": "Patient", "criteria": f"Patient?_id={alice.profile_id}", "interaction": ["read", "search"]},
    ], name="Alice app")


def test_filters_of_both_sides_apply_to_searches_and_reads(client, lab_practitioner, alice_app, data):
    api = user_api(client, alice_app, lab_practitioner)
    assert ids(api.get("/Observation")) == {data["alice_lab"]}  # lab (member) and Alice's (client)
    assert api.get("/Observation", {"_summary": "count"}).json()["total"] == 1
    assert_outcome(api.get(f"/{data['alice_vital']}"), 404, "not-found")  # filtered by the member's policy
    assert_outcome(api.get(f"/{data['bob_lab']}"), 404, "not-found")  # filtered by the client's policy


def test_filters_of_both_sides_apply_to_include_and_revinclude(client, lab_practitioner, alice_app, alice, bob,
                                                               data):
    api = user_api(client, alice_app, lab_practitioner)
    included = api.get("/Observation", {"_include": "Observation:subject"})
    assert ids(included) == {data["alice_lab"]}
    assert ids(included, "include") == {alice.profile}
    assert ids(api.get("/Patient")) == {alice.profile}
    revincluded = api.get("/Patient", {"_revinclude": "Observation:subject"})
    assert ids(revincluded) == {alice.profile}
    assert ids(revincluded, "include") == {data["alice_lab"]}


def test_alternatives_of_each_side_are_kept(client, project1, lab_practitioner, alice, bob, data):
    app = app_with(project1, [
        {"resourceType": "Observation", "criteria": f"Observation?subject={alice.profile}"},
        {"resourceType": "Observation", "criteria": f"Observation?subject={bob.profile}"},
    ])
    api = user_api(client, app, lab_practitioner)
    assert ids(api.get("/Observation")) == {data["alice_lab"], data["bob_lab"]}


def test_hidden_fields_of_either_side_are_removed(client, lab_practitioner, alice_app, data):
    api = user_api(client, alice_app, lab_practitioner)
    for body in (api.get(f"/{data['alice_lab']}").json(), api.get("/Observation").json()["entry"][0]["resource"]):
        assert body["id"] == data["alice_lab"].split("/")[1]
        assert "note" not in body  # hidden by the member's policy
        assert "interpretation" not in body  # hidden by the client's policy
        assert body["status"] == "final"
    stored = Resource.objects.get(resource_id=data["alice_lab"].split("/")[1]).content
    assert stored["note"] and stored["interpretation"]


def test_readonly_fields_of_the_client_side_are_kept_on_update(client, project1, practitioner, alice):
    app = app_with(project1, [{"resourceType": "Patient", "readonlyFields": ["identifier"]}])
    api = user_api(client, app, practitioner)
    current = api.get(f"/{alice.profile}").json()
    changed = {**current, "identifier": [{"system": "urn:mrn", "value": "HACKED"}], "gender": "female"}
    assert api.put(f"/{alice.profile}", changed).status_code == 200
    stored = Resource.objects.get(resource_type="Patient", resource_id=alice.profile_id).content
    assert stored["identifier"] == [{"system": "urn:mrn", "value": "A-1"}]
    assert stored["gender"] == "female"


def test_client_policy_parameters_are_the_members(client, project1, alice, bob, data):
    """``%patient`` in the client's policy is the signed-in member's patient, not the client."""
    app = app_with(project1, [{"resourceType": "Observation", "criteria": "Observation?subject=%patient"}])
    assert ids(user_api(client, app, bob).get("/Observation")) == {data["bob_lab"]}


def test_client_credentials_keep_the_clients_policy_alone(client, project1, data):
    app = app_with(project1, PATIENT_READ_ONLY)
    api = Api(client, mint(client=app))
    assert_outcome(api.get("/Observation"), 403, "forbidden")
    assert api.get("/Patient").status_code == 200


def test_an_invalid_client_policy_grants_nothing(client, project1, practitioner, data):
    app = app_with(project1, None)
    policy = AccessPolicyFactory(project=project1, name="Broken")
    type(policy).objects.filter(pk=policy.pk).update(resources=[{"resourceType": "Observation", "bogus": 1}])
    type(app).objects.filter(pk=app.pk).update(access_policy=policy)
    api = user_api(client, app, practitioner)
    assert_outcome(api.get("/Observation"), 403, "forbidden")
    assert_outcome(api.get("/Patient"), 403, "forbidden")


def test_medplum_looser_behaviour_can_be_restored(client, project1, practitioner, data):
    app = app_with(project1, PATIENT_READ_ONLY)
    with override_settings(MEDPLUM_AUTH={**auth_settings.user_settings, "CLIENT_POLICY_RESTRICTS_USERS": False}):
        api = user_api(client, app, practitioner)
        assert ids(api.get("/Observation")) == {data["alice_lab"], data["alice_vital"], data["bob_lab"]}
    # Back on (the default): the same token is restricted at once (nothing is remembered per login).
    assert_outcome(api.get("/Observation"), 403, "forbidden")


def test_auth_me_shows_the_rules_both_sides_allow(client, lab_practitioner, alice_app, alice):
    api = user_api(client, alice_app, lab_practitioner)
    me = client.get("/auth/me", HTTP_AUTHORIZATION=f"Bearer {api.token}")
    assert me.status_code == 200
    assert me.json()["accessPolicy"] == {"resourceType": "AccessPolicy", "resource": [
        {"resourceType": "Observation",
         "criteria": f"Observation?category=laboratory&subject={alice.profile}",
         "interaction": ["read", "search"], "hiddenFields": ["note", "interpretation"]},
        {"resourceType": "Patient", "criteria": f"Patient?_id={alice.profile_id}", "interaction": ["read", "search"]},
    ]}


def test_auth_me_without_a_client_policy_is_the_members_policy(client, project1, alice):
    api = user_api(client, app_with(project1, None), alice)
    body = client.get("/auth/me", HTTP_AUTHORIZATION=f"Bearer {api.token}").json()
    assert body["accessPolicy"]["resource"][0] == {"resourceType": "Patient",
                                                   "criteria": f"Patient?_id={alice.profile_id}"}


def test_patient_picker_offers_only_patients_the_client_allows(client, project1, practitioner, alice, bob):
    app = app_with(project1, [{"resourceType": "Patient", "criteria": f"Patient?_id={bob.profile_id}"}])
    flow = Flow(client, app)
    response = flow.sign_in(flow.authorize(scope="openid launch/patient patient/*.rs"),
                            email=practitioner.user.email)
    while response.status_code == 302 and not response["Location"].startswith("/oauth2/patient"):
        response = client.get(response["Location"])
    page = client.get(response["Location"])
    assert [row["id"] for row in page.context["results"]] == [bob.profile_id]
    rid = page.context["rid"]
    refused = client.post("/oauth2/patient", {"rid": rid, "patient": alice.profile})
    assert refused.status_code == 400
    chosen = client.post("/oauth2/patient", {"rid": rid, "patient": bob.profile})
    assert chosen.status_code == 302


def test_deselecting_every_data_scope_on_consent_grants_no_data(client, project1, alice, data):
    """A token without SMART resource scopes is governed by the policies alone; when that is because
    the user withheld every one the app asked for, it must reach nothing."""
    from tests.oauth.conftest import login_of, query

    app = app_with(project1, None)
    flow = Flow(client, app)
    response = client.get(flow.sign_in(flow.authorize(scope="openid patient/Observation.rs"),
                                       email=alice.user.email)["Location"])
    assert response["Location"].startswith("/oauth2/consent?rid=")
    rid = query(response["Location"])["rid"]
    done = flow.follow(client.post("/oauth2/consent", {"rid": rid, "action": "allow", "scope": []}), approve=False)
    token = flow.token(query(done["Location"])["code"]).json()
    assert token["scope"] == "openid"
    api = Api(client, token["access_token"])
    assert_outcome(api.get("/Observation"), 403, "forbidden")
    assert_outcome(api.get(f"/{alice.profile}"), 403, "forbidden")
    assert login_of(token["access_token"]).resource_scopes_withheld
    # Asked for openid alone (Medplum's apps), the same patient's policy applies as before.
    plain = user_api(client, app, alice)
    assert ids(plain.get("/Observation")) == {data["alice_lab"], data["alice_vital"]}
