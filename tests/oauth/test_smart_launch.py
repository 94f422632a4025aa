"""SMART App Launch 2.2: EHR launch (launch contexts, ``/auth/launch``, ``launch=`` at the
authorization endpoint), standalone ``launch/patient`` (the patient picker), token-response and
introspection context, ``smart_style_url``, discovery, and Backend Services token lifetimes."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.utils import timezone
from jwcrypto import jwk

from fhir_api.repository import Repository
from medplum_auth import launch as launch_utils
from medplum_auth import services
from medplum_auth.conf import auth_settings
from medplum_auth.models import LaunchContext, Login
from medplum_auth.scopes import is_supported
from tests.factories import ClientApplicationFactory, MembershipFactory, ProjectFactory, UserFactory
from tests.fhir.conftest import mint
from tests.oauth.conftest import (
    REDIRECT_URI,
    Flow,
    basic_auth,
    id_token_claims,
    login_of,
    post_form,
    query,
    rid,
    verify_jwt,
)
from tests.oauth.test_client_auth import assertion_data, client_credentials, make_assertion, public_jwks

LAUNCH_URI = "https://app.example.org/launch"
STYLE_FIELDS = {"color_background", "color_error", "color_highlight", "color_modal_backdrop", "color_success",
                "color_text", "dim_border_radius", "dim_font_size", "dim_spacing_size", "font_family_body",
                "font_family_heading"}


@pytest.fixture
def app(oauth_project):
    return ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=REDIRECT_URI,
                                    launch_uri=LAUNCH_URI, name="SMART app")


@pytest.fixture
def doctor(oauth_project):
    user = UserFactory(email="doc@example.org", username="doc@example.org")
    return MembershipFactory(project=oauth_project, user=user, profile_type="Practitioner",
                             profile_display="Dr Who")


def seed_patient(project: Any, family: str, given: str, resource_id: str | None = None) -> str:
    """A Patient resource in the FHIR store; its id."""
    row = Repository(project.pk, None).create(
        "Patient", {"resourceType": "Patient", "name": [{"family": family, "given": [given]}]},
        resource_id=resource_id)
    return row.resource_id


@pytest.fixture
def patients(oauth_project) -> dict[str, str]:
    return {"alice": seed_patient(oauth_project, "Anders", "Alice"),
            "bob": seed_patient(oauth_project, "Baker", "Bob")}


def new_launch(app: Any, by: Any, patient: str = "Patient/p-1", encounter: str | None = "Encounter/e-1",
               **fields: Any) -> LaunchContext:
    launch = services.create_launch(app, patient, encounter=encounter, created_by=by.user)
    if fields:
        LaunchContext.objects.filter(pk=launch.pk).update(**fields)
        launch.refresh_from_db()
    return launch


def run(flow: Flow, email: str, **params: str):
    """Authorize, sign in when asked, follow our pages (approving consent); the final response."""
    response = flow.authorize(**params)
    if response.status_code == 302 and response["Location"].startswith("/oauth2/signin"):
        response = flow.sign_in(response, email=email)
    return flow.follow(response)


def redeem(flow: Flow, response) -> dict[str, Any]:
    assert response.status_code == 302 and response["Location"].startswith(REDIRECT_URI), response
    token = flow.token(query(response["Location"])["code"])
    assert token.status_code == 200, token.content
    return token.json()


def assert_error_redirect(response, error: str, description: str | None = None) -> dict[str, str]:
    assert response.status_code == 302, response.content
    assert response["Location"].startswith(REDIRECT_URI + "?"), response["Location"]
    params = query(response["Location"])
    assert params["error"] == error, params
    assert params["state"] == "xyz-state"
    if description is not None:
        assert params["error_description"] == description
    return params


# --- launch contexts (service) ----------------------------------------------------------------

def test_create_launch(app, doctor):
    before = timezone.now()
    launch = services.create_launch(app, "p-1", encounter="Encounter/e-1", created_by=doctor.user)
    assert launch.patient == "Patient/p-1" and launch.encounter == "Encounter/e-1"
    assert launch.client == app and launch.project == app.project and launch.created_by == doctor.user
    assert launch.used_at is None
    lifetime = (launch.expires_at - before).total_seconds()
    assert auth_settings.LAUNCH_LIFETIME - 5 <= lifetime <= auth_settings.LAUNCH_LIFETIME + 5
    url = launch_utils.launch_url(launch)
    assert url.startswith(LAUNCH_URI + "?")
    assert query(url) == {"iss": auth_settings.fhir_base_url, "launch": str(launch.pk)}


def test_launch_url_keeps_the_launch_uris_query(oauth_project, doctor):
    app = ClientApplicationFactory(project=oauth_project, launch_uri="https://app.example.org/l?tenant=7")
    launch = services.create_launch(app, "Patient/p-1")
    params = query(launch_utils.launch_url(launch))
    assert params == {"tenant": "7", "iss": auth_settings.fhir_base_url, "launch": str(launch.pk)}


@pytest.mark.parametrize("patient, encounter, field", [
    ("", None, "patient"),
    ("Observation/1", None, "patient"),
    ("Patient/a b", None, "patient"),
    ("Patient/" + "x" * 65, None, "patient"),
    (None, None, "patient"),
    ("Patient/1", "Patient/2", "encounter"),
    ("Patient/1", "Encounter/../x y", "encounter"),
])
def test_create_launch_validates_reference_shapes(app, patient, encounter, field):
    with pytest.raises(ValidationError) as caught:
        services.create_launch(app, patient, encounter=encounter)
    assert field in caught.value.message_dict
    assert not LaunchContext.objects.exists()


def test_create_launch_checks_the_client(app, oauth_project):
    other = ProjectFactory(name="Elsewhere")
    with pytest.raises(ValidationError, match="another project"):
        services.create_launch(app, "Patient/1", project=other)
    no_uri = ClientApplicationFactory(project=oauth_project, launch_uri="")
    with pytest.raises(ValidationError, match="no launch URI"):
        services.create_launch(no_uri, "Patient/1")
    services.set_client_status(app, "off")
    with pytest.raises(ValidationError, match="disabled"):
        services.create_launch(app, "Patient/1")
    assert not LaunchContext.objects.exists()


# --- POST /auth/launch ------------------------------------------------------------------------

def launch_api(http: Any, token: str | None, body: Any):
    extra = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return http.post("/auth/launch", json.dumps(body), content_type="application/json", **extra)


def test_launch_api_for_a_practitioner(client, app, doctor):
    token = mint(client=app, membership=doctor)
    response = launch_api(client, token, {"clientId": app.client_id, "patient": "Patient/p-1",
                                          "encounter": {"reference": "Encounter/e-1"}})
    assert response.status_code == 201, response.content
    body = response.json()
    launch = LaunchContext.objects.get(pk=body["launch"])
    assert launch.patient == "Patient/p-1" and launch.encounter == "Encounter/e-1"
    assert launch.created_by == doctor.user and launch.client == app
    parts = urlsplit(body["url"])
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == LAUNCH_URI
    assert query(body["url"]) == {"iss": auth_settings.fhir_base_url, "launch": body["launch"]}
    assert response["Cache-Control"] == "no-store"


def test_launch_api_for_a_patient_admin(client, app, patient):
    patient.admin = True
    patient.save()
    response = launch_api(client, mint(client=app, membership=patient), {"clientId": app.client_id,
                                                                         "patient": patient.profile_id})
    assert response.status_code == 201, response.content


def test_launch_api_refuses_patients_and_clients(client, app, patient, confidential_client):
    for token in (mint(client=app, membership=patient), mint(client=confidential_client)):
        response = launch_api(client, token, {"clientId": app.client_id, "patient": "Patient/p-1"})
        assert response.status_code == 403, response.content
        assert response.json()["issue"][0]["code"] == "forbidden"
    assert not LaunchContext.objects.exists()


def test_launch_api_needs_a_valid_token(client, app):
    assert launch_api(client, None, {"clientId": app.client_id, "patient": "Patient/1"}).status_code == 401
    assert launch_api(client, "not.a.token", {"clientId": app.client_id, "patient": "Patient/1"}).status_code == 401


@pytest.mark.parametrize("body, expression", [
    ({"patient": "Patient/1"}, "clientId"),
    ({"clientId": "nope", "patient": "Patient/1"}, "clientId"),
    ({"clientId": "APP"}, "patient"),
    ({"clientId": "APP", "patient": "Practitioner/1"}, "patient"),
    ({"clientId": "APP", "patient": "Patient/1", "encounter": "Patient/2"}, "encounter"),
])
def test_launch_api_errors(client, app, doctor, body, expression):
    body = {k: (app.client_id if v == "APP" else v) for k, v in body.items()}
    response = launch_api(client, mint(client=app, membership=doctor), body)
    assert response.status_code == 400, response.content
    assert expression in response.json()["issue"][0]["expression"]


def test_launch_api_only_for_the_tokens_project(client, app, doctor):
    other_project = ProjectFactory(name="Elsewhere")
    foreign = ClientApplicationFactory(project=other_project, launch_uri=LAUNCH_URI)
    response = launch_api(client, mint(client=app, membership=doctor), {"clientId": foreign.client_id,
                                                                        "patient": "Patient/1"})
    assert response.status_code == 400
    assert not LaunchContext.objects.exists()


def test_launch_api_needs_json(client, app, doctor):
    response = client.post("/auth/launch", {"clientId": app.client_id, "patient": "Patient/1"},
                           HTTP_AUTHORIZATION=f"Bearer {mint(client=app, membership=doctor)}")
    assert response.status_code == 400


# --- EHR launch at the authorization endpoint --------------------------------------------------

@pytest.mark.spec("SMART App Launch 2.2 §EHR launch")
def test_ehr_launch(client, app, doctor):
    launch = new_launch(app, doctor)
    flow = Flow(client, app)
    body = redeem(flow, run(flow, "doc@example.org", scope="openid fhirUser launch patient/*.rs",
                            launch=str(launch.pk), aud=auth_settings.fhir_base_url))
    assert body["patient"] == "p-1"
    assert body["encounter"] == "e-1"
    assert body["need_patient_banner"] is True
    assert body["smart_style_url"] == f"{auth_settings.fhir_base_url}/.well-known/smart-styles.json"
    assert body["profile"]["reference"] == f"Practitioner/{doctor.profile_id}"
    assert id_token_claims(body["id_token"])["fhirUser"] == f"{auth_settings.fhir_base_url}/{doctor.profile}"
    login = login_of(body["access_token"])
    assert login.launch == launch and login.launch_patient == "Patient/p-1"
    assert login.launch_encounter == "Encounter/e-1"
    launch.refresh_from_db()
    assert launch.used_at is not None


def test_ehr_launch_without_encounter(client, app, doctor):
    launch = new_launch(app, doctor, encounter=None)
    flow = Flow(client, app)
    body = redeem(flow, run(flow, "doc@example.org", scope="openid launch", launch=str(launch.pk)))
    assert body["patient"] == "p-1" and "encounter" not in body


def _expired(app, doctor):
    return new_launch(app, doctor, expires_at=timezone.now() - timedelta(seconds=1))


def _used(app, doctor):
    return new_launch(app, doctor, used_at=timezone.now())


def _other_client(app, doctor):
    other = ClientApplicationFactory(project=app.project, public=True, launch_uri=LAUNCH_URI)
    return new_launch(other, doctor)


@pytest.mark.parametrize("make", [_expired, _used, _other_client], ids=["expired", "used", "other-client"])
def test_unusable_launch_is_refused_before_sign_in(client, app, doctor, make):
    launch = make(app, doctor)
    response = Flow(client, app).authorize(scope="openid launch", launch=str(launch.pk))
    assert_error_redirect(response, "invalid_request", "Invalid launch")
    assert not Login.objects.exists()


@pytest.mark.parametrize("value", ["", "nope", str(uuid.uuid4())])
def test_unknown_launch_is_refused(client, app, value):
    response = Flow(client, app).authorize(scope="openid launch", launch=value)
    assert_error_redirect(response, "invalid_request", "Invalid launch")


def test_launch_is_single_use(client, app, doctor):
    launch = new_launch(app, doctor)
    flow = Flow(client, app)
    redeem(flow, run(flow, "doc@example.org", scope="openid launch", launch=str(launch.pk)))
    again = Flow(client, app).authorize(scope="openid launch", launch=str(launch.pk))
    assert_error_redirect(again, "invalid_request", "Invalid launch")


def test_launch_expiring_during_sign_in_is_refused(client, app, doctor):
    launch = new_launch(app, doctor)
    flow = Flow(client, app)
    response = flow.authorize(scope="openid launch", launch=str(launch.pk))
    LaunchContext.objects.filter(pk=launch.pk).update(expires_at=timezone.now())
    response = flow.follow(flow.sign_in(response, email="doc@example.org"))
    assert_error_redirect(response, "invalid_request", "Invalid launch")
    assert not Login.objects.exists()


def test_launch_of_another_user_is_refused(client, app, doctor, oauth_project):
    colleague = MembershipFactory(project=oauth_project, profile_type="Practitioner",
                                  user=UserFactory(email="other@example.org", username="other@example.org"))
    launch = new_launch(app, colleague)
    flow = Flow(client, app)
    assert_error_redirect(run(flow, "doc@example.org", scope="openid launch", launch=str(launch.pk)),
                          "invalid_request", "Invalid launch")
    launch.refresh_from_db()
    assert launch.used_at is None


def test_a_patient_cannot_take_another_patients_launch(client, app, patient):
    launch = new_launch(app, patient, patient="Patient/someone-else")
    flow = Flow(client, app)
    assert_error_redirect(run(flow, "pat@example.org", scope="openid launch", launch=str(launch.pk)),
                          "invalid_request", "Invalid launch")


def test_a_patient_launched_with_their_own_record(client, app, patient):
    launch = new_launch(app, patient, patient=patient.profile, encounter=None)
    flow = Flow(client, app)
    body = redeem(flow, run(flow, "pat@example.org", scope="openid launch", launch=str(launch.pk)))
    assert body["patient"] == patient.profile_id and body["need_patient_banner"] is True


def test_launch_without_a_launch_scope_binds_nothing(client, app, doctor):
    launch = new_launch(app, doctor)
    flow = Flow(client, app)
    body = redeem(flow, run(flow, "doc@example.org", scope="openid", launch=str(launch.pk)))
    assert "patient" not in body and "need_patient_banner" not in body
    launch.refresh_from_db()
    assert launch.used_at is None


def test_ehr_launch_with_prompt_none(client, app, doctor):
    first = Flow(client, app)
    redeem(first, run(first, "doc@example.org", scope="openid launch"))  # signs in and consents
    launch = new_launch(app, doctor)
    flow = Flow(client, app)
    body = redeem(flow, flow.authorize(scope="openid launch", launch=str(launch.pk), prompt="none"))
    assert body["patient"] == "p-1"


def test_launch_context_survives_refresh(client, app, doctor):
    launch = new_launch(app, doctor)
    flow = Flow(client, app)
    body = redeem(flow, run(flow, "doc@example.org", scope="openid launch offline_access", launch=str(launch.pk)))
    refreshed = post_form(client, "/oauth2/token", {"grant_type": "refresh_token", "client_id": app.client_id,
                                                    "refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.content
    again = refreshed.json()
    assert again["patient"] == "p-1" and again["encounter"] == "e-1" and again["need_patient_banner"] is True
    assert again["smart_style_url"] == body["smart_style_url"]


@pytest.mark.spec("SMART App Launch 2.2 §token-introspection")
def test_introspection_echoes_the_launch_context(client, app, doctor, oauth_project):
    launch = new_launch(app, doctor)
    flow = Flow(client, app)
    body = redeem(flow, run(flow, "doc@example.org", scope="openid fhirUser launch", launch=str(launch.pk)))
    rs = ClientApplicationFactory(project=oauth_project, name="Resource server")
    response = post_form(client, "/oauth2/introspect", {"token": body["access_token"]},
                         HTTP_AUTHORIZATION=basic_auth(rs.client_id, rs.plaintext_secret))
    data = response.json()
    assert data["active"] is True
    assert data["patient"] == "p-1" and data["encounter"] == "e-1"
    assert data["fhirUser"] == f"{auth_settings.fhir_base_url}/{doctor.profile}"  # unchanged: the user


# --- standalone launch/patient: the patient picker --------------------------------------------

@pytest.mark.spec("SMART App Launch 2.2 §standalone launch")
def test_practitioner_picks_a_patient(client, app, doctor, patients):
    flow = Flow(client, app)
    response = flow.sign_in(flow.authorize(scope="openid launch/patient patient/*.rs"), email="doc@example.org")
    response = client.get(response["Location"])  # resume → the picker, before consent
    assert response.status_code == 302 and response["Location"].startswith("/oauth2/patient?rid="), response
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert page["X-Frame-Options"] == "DENY" and "no-store" in page["Cache-Control"]
    assert {row["id"] for row in page.context["results"]} == set(patients.values())
    assert "Alice Anders" in page.content.decode() and 'type="search"' in page.content.decode()
    found = client.get("/oauth2/patient", {"rid": rid(response), "q": "ali"})
    assert [row["id"] for row in found.context["results"]] == [patients["alice"]]
    assert client.get("/oauth2/patient", {"rid": rid(response), "q": "alice baker"}).context["results"] == []
    chosen = client.post("/oauth2/patient", {"rid": rid(response), "patient": f"Patient/{patients['bob']}"})
    assert chosen.status_code == 302
    following = client.get(chosen["Location"])
    assert following["Location"].startswith("/oauth2/consent"), following["Location"]
    body = redeem(flow, flow.follow(following))
    assert body["patient"] == patients["bob"] and body["need_patient_banner"] is True
    assert "encounter" not in body
    assert login_of(body["access_token"]).launch_patient == f"Patient/{patients['bob']}"


def test_picker_refuses_a_patient_outside_the_project(client, app, doctor, patients):
    stranger = seed_patient(ProjectFactory(name="Elsewhere"), "Stranger", "Sam")
    flow = Flow(client, app)
    response = client.get(flow.sign_in(flow.authorize(scope="openid launch/patient"),
                                       email="doc@example.org")["Location"])
    for value in (f"Patient/{stranger}", "Patient/missing", "not an id", ""):
        refused = client.post("/oauth2/patient", {"rid": rid(response), "patient": value})
        assert refused.status_code == 400, value
        assert "Choose a patient" in refused.content.decode()
    assert not Login.objects.exists()


def test_patient_user_gets_their_own_context_without_a_picker(client, app, patient):
    flow = Flow(client, app)
    body = redeem(flow, run(flow, "pat@example.org", scope="openid launch/patient patient/*.rs"))
    assert body["patient"] == patient.profile_id and body["need_patient_banner"] is True


def test_picker_with_prompt_none_is_interaction_required(client, app, doctor):
    first = Flow(client, app)
    redeem(first, run(first, "doc@example.org", scope="openid"))
    response = Flow(client, app).authorize(scope="openid launch/patient", prompt="none")
    assert_error_redirect(response, "interaction_required")


def test_patient_picked_for_one_profile_is_not_used_for_another(client, app, doctor, patients, oauth_project):
    MembershipFactory(project=oauth_project, user=doctor.user, profile_type="RelatedPerson")
    flow = Flow(client, app)
    response = client.get(flow.sign_in(flow.authorize(scope="openid launch/patient"),
                                       email="doc@example.org")["Location"])
    assert response["Location"].startswith("/oauth2/profile")
    client.post("/oauth2/profile", {"rid": rid(response), "membership": str(doctor.pk)})
    client.post("/oauth2/patient", {"rid": rid(response), "patient": f"Patient/{patients['alice']}"})
    other = doctor.user.medplum_memberships.exclude(pk=doctor.pk).get()
    client.post("/oauth2/profile", {"rid": rid(response), "membership": str(other.pk)})
    again = client.get(f"/oauth2/authorize/resume?rid={rid(response)}")
    assert again["Location"].startswith("/oauth2/patient"), again["Location"]


def test_picker_without_a_search_asks_for_an_id(client, app, doctor, monkeypatch):
    monkeypatch.setattr(launch_utils, "_registered", None)
    flow = Flow(client, app)
    response = client.get(flow.sign_in(flow.authorize(scope="openid launch/patient"),
                                       email="doc@example.org")["Location"])
    page = client.get(response["Location"])
    assert page.context["searchable"] is False and 'name="patient" type="text"' in page.content.decode()
    assert client.post("/oauth2/patient", {"rid": rid(response), "patient": "bad id"}).status_code == 400
    chosen = client.post("/oauth2/patient", {"rid": rid(response), "patient": "p-42"})
    body = redeem(flow, flow.follow(chosen))
    assert body["patient"] == "p-42"


SEARCHED_FOR: list[Any] = []


def custom_search(membership: Any, query: str = "", patient_id: str | None = None,
                  client: Any = None) -> list[dict[str, str]]:
    SEARCHED_FOR.append(client)
    rows = [{"id": "ext-1", "display": "External One"}, {"id": "ext-2", "display": "External Two"}]
    if patient_id is not None:
        return [r for r in rows if r["id"] == patient_id]
    return [r for r in rows if query.lower() in r["display"].lower()]


def test_patient_search_setting_overrides_the_registered_search(client, app, doctor, patients):
    with override_settings(MEDPLUM_AUTH={**auth_settings.user_settings,
                                         "PATIENT_SEARCH": "tests.oauth.test_smart_launch.custom_search"}):
        assert launch_utils.patient_search() is custom_search
        flow = Flow(client, app)
        response = client.get(flow.sign_in(flow.authorize(scope="openid launch/patient"),
                                           email="doc@example.org")["Location"])
        page = client.get("/oauth2/patient", {"rid": rid(response), "q": "two"})
        assert page.context["results"] == [{"id": "ext-2", "display": "External Two"}]
        refused = client.post("/oauth2/patient", {"rid": rid(response), "patient": f"Patient/{patients['alice']}"})
        assert refused.status_code == 400
        body = redeem(flow, flow.follow(client.post("/oauth2/patient", {"rid": rid(response),
                                                                        "patient": "Patient/ext-1"})))
        assert body["patient"] == "ext-1"
    # Every search is told which app the member is signing in to (its policy restricts them too).
    assert SEARCHED_FOR and {c.client_id for c in SEARCHED_FOR} == {app.client_id}


def test_fhir_api_registers_its_patient_search():
    from fhir_api.launch import search_patients

    assert launch_utils._registered is search_patients


def test_picker_needs_a_pending_request(client):
    response = client.get("/oauth2/patient", {"rid": "nope"})
    assert response.status_code == 400


# --- smart_style_url and discovery ------------------------------------------------------------

@pytest.mark.spec("SMART App Launch 2.2 §styling")
@pytest.mark.parametrize("path", ["/fhir/R4/.well-known/smart-styles.json", "/.well-known/smart-styles.json"])
def test_smart_styles_are_served(client, path):
    response = client.get(path, HTTP_ACCEPT="text/html")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Access-Control-Allow-Origin"] == "*"
    body = json.loads(response.content)
    assert set(body) == STYLE_FIELDS
    assert all(isinstance(value, str) and value for value in body.values())


def test_smart_style_url_resolves(client, flow, patient):
    code_flow = Flow(client, flow.app)
    body = redeem(code_flow, run(code_flow, "pat@example.org", scope="openid"))
    url = body["smart_style_url"]
    assert url.startswith(auth_settings.ISSUER)
    response = client.get(url.removeprefix(auth_settings.ISSUER))
    assert response.status_code == 200 and set(response.json()) == STYLE_FIELDS


@pytest.mark.spec("SMART App Launch 2.2 §2.1")
def test_smart_configuration_advertises_launch(client):
    body = client.get("/fhir/R4/.well-known/smart-configuration").json()
    assert {"launch-ehr", "launch-standalone", "context-ehr-patient", "context-ehr-encounter",
            "context-standalone-patient", "context-style", "context-banner"} <= set(body["capabilities"])
    assert {"launch", "launch/patient", "launch/encounter"} <= set(body["scopes_supported"])
    assert all(is_supported(scope) for scope in body["scopes_supported"])


# --- Backend Services: client_credentials tokens capped by CLIENT_CREDENTIALS_MAX_LIFETIME ------

@pytest.fixture
def backend(oauth_project):
    key = jwk.JWK.generate(kid="backend-key", alg="RS384", use="sig", kty="RSA", size=2048)
    app = ClientApplicationFactory(project=oauth_project, plaintext_secret="", client_secret="",
                                   jwks=public_jwks(key), name="Backend service")
    return app, key


@pytest.mark.spec("SMART App Launch 2.2 §backend-services")
def test_backend_services_token_lifetime_is_capped(client, backend):
    app, key = backend
    app.access_token_lifetime = 7200
    app.save()
    response = client_credentials(client, assertion_data(make_assertion(key, app.client_id), scope="system/*.rs"))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["expires_in"] == 3600 == auth_settings.CLIENT_CREDENTIALS_MAX_LIFETIME
    assert body["scope"] == "system/*.rs"
    assert "refresh_token" not in body and "smart_style_url" not in body and "patient" not in body
    claims = verify_jwt(client, body["access_token"])[1]
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["exp"] <= time.time() + 3601


def test_client_credentials_default_lifetime_is_above_the_sdk_grace_period(client, backend):
    """@medplum/core renews a token while < 300 s are left: a 300 s token would loop it."""
    app, key = backend
    response = client_credentials(client, assertion_data(make_assertion(key, app.client_id), scope="system/*.rs"))
    assert response.json()["expires_in"] == auth_settings.ACCESS_TOKEN_LIFETIME == 3600 > 300


def test_backend_services_shorter_client_lifetime_wins(client, backend):
    app, key = backend
    app.access_token_lifetime = 60
    app.save()
    response = client_credentials(client, assertion_data(make_assertion(key, app.client_id), scope="system/*.rs"))
    assert response.json()["expires_in"] == 60


def test_client_credentials_cap_is_a_setting(client, confidential_client):
    confidential_client.access_token_lifetime = 7200
    confidential_client.save()
    auth = basic_auth(confidential_client.client_id, confidential_client.plaintext_secret)
    with override_settings(MEDPLUM_AUTH={**auth_settings.user_settings, "CLIENT_CREDENTIALS_MAX_LIFETIME": 120}):
        response = client_credentials(client, {"scope": "system/*.rs"}, HTTP_AUTHORIZATION=auth)
        assert response.json()["expires_in"] == 120
    assert client_credentials(client, {"scope": "system/*.rs"}, HTTP_AUTHORIZATION=auth).json()["expires_in"] == 3600


def test_cap_does_not_touch_user_tokens(client, app, patient):
    flow = Flow(client, app)
    body = redeem(flow, run(flow, "pat@example.org", scope="openid"))
    assert body["expires_in"] == auth_settings.ACCESS_TOKEN_LIFETIME


def test_invalid_scope_still_refused_for_launch_scopes_in_authorize(client, app):
    response = Flow(client, app).authorize(scope="openid launch/nonsense")
    assert query(response["Location"])["error"] == "invalid_scope"



def test_a_patient_cannot_use_the_picker(client, app, patient, patients):
    """The picker is for users without a patient of their own: a Patient never gets another context."""
    flow = Flow(client, app)
    response = flow.sign_in(flow.authorize(scope="openid launch/patient patient/*.rs"), email="pat@example.org")
    pending = rid(response)
    assert client.get("/oauth2/patient", {"rid": pending})["Location"].startswith("/oauth2/authorize/resume")
    posted = client.post("/oauth2/patient", {"rid": pending, "patient": f"Patient/{patients['bob']}"})
    assert posted["Location"].startswith("/oauth2/authorize/resume")
    body = redeem(flow, flow.follow(posted))
    assert body["patient"] == patient.profile_id
    assert login_of(body["access_token"]).launch_patient == ""


def test_picker_is_not_used_with_an_ehr_launch(client, app, doctor, patients):
    launch = new_launch(app, doctor)
    flow = Flow(client, app)
    response = flow.sign_in(flow.authorize(scope="openid launch launch/patient", launch=str(launch.pk)),
                            email="doc@example.org")
    posted = client.post("/oauth2/patient", {"rid": rid(response), "patient": f"Patient/{patients['bob']}"})
    body = redeem(flow, flow.follow(posted))
    assert body["patient"] == "p-1"
