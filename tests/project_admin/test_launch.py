"""Project Admin "Launch app": a SMART EHR launch from the client page, then the app's flow."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from fhir_api.repository import Repository
from medplum_auth.conf import auth_settings
from medplum_auth.models import LaunchContext
from project_admin.security import CONTENT_SECURITY_POLICY
from tests.factories import DEFAULT_PASSWORD, ClientApplicationFactory, MembershipFactory
from tests.oauth.conftest import REDIRECT_URI, Flow, query
from tests.project_admin.test_browser import browser, site  # noqa: F401 - the Chromium fixtures

from .conftest import text, url

pytestmark = pytest.mark.django_db

LAUNCH_URI = "https://smart.example.org/launch"


@pytest.fixture
def smart_app(project):
    return ClientApplicationFactory(project=project, public=True, redirect_uris=REDIRECT_URI,
                                    launch_uri=LAUNCH_URI, name="Growth chart")


@pytest.fixture
def alice(project) -> str:
    return Repository(project.pk, None).create(
        "Patient", {"resourceType": "Patient", "name": [{"family": "Anders", "given": ["Alice"]}]}).resource_id


def launch(pa: Any, project: Any, app: Any, **data: str):
    return pa.post(url("client-launch", project, app.pk), data)


def test_client_page_offers_launch_with_patient_suggestions(pa, project, smart_app, alice):
    response = pa.get(url("client", project, smart_app.pk))
    page = text(response)
    assert "Launch app" in page and 'name="patient"' in page and 'name="encounter"' in page
    assert f'value="Patient/{alice}"' in page and "Alice Anders" in page  # datalist from the patient search
    # The form's redirect to the app's origin must be allowed by form-action.
    csp = response["Content-Security-Policy"]
    assert "form-action 'self' https://smart.example.org;" in csp
    assert csp == CONTENT_SECURITY_POLICY.replace("form-action 'self'", "form-action 'self' https://smart.example.org")


def test_no_launch_without_a_launch_uri(pa, project, client_app):
    response = pa.get(url("client", project, client_app.pk))
    assert "Launch app" not in text(response)
    assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    follow = launch(pa, project, client_app, patient="Patient/1")
    assert follow.status_code == 303 and follow["Location"] == url("client", project, client_app.pk)
    assert "no launch URI" in text(pa.get(follow["Location"]))
    assert not LaunchContext.objects.exists()


def test_launch_redirects_to_the_app(pa, project, smart_app, admin_user, alice):
    response = launch(pa, project, smart_app, patient=f"Patient/{alice}", encounter="Encounter/enc-9")
    assert response.status_code == 303
    location = response["Location"]
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == LAUNCH_URI
    params = query(location)
    assert params["iss"] == auth_settings.fhir_base_url
    context = LaunchContext.objects.get(pk=params["launch"])
    assert context.patient == f"Patient/{alice}" and context.encounter == "Encounter/enc-9"
    assert context.client == smart_app and context.project == project and context.created_by == admin_user


@pytest.mark.parametrize("data, message", [
    ({"patient": ""}, "Patient reference"),
    ({"patient": "Observation/1"}, "Patient reference"),
    ({"patient": "Patient/1", "encounter": "nope nope"}, "Encounter reference"),
])
def test_launch_with_bad_references_changes_nothing(pa, project, smart_app, data, message):
    response = launch(pa, project, smart_app, **data)
    assert response.status_code == 303 and response["Location"] == url("client", project, smart_app.pk)
    assert message in text(pa.get(response["Location"]))
    assert not LaunchContext.objects.exists()


def test_launch_of_a_disabled_client_is_refused(pa, project, smart_app):
    smart_app.status = "off"
    smart_app.save()
    assert "Launch app" not in text(pa.get(url("client", project, smart_app.pk)))
    response = launch(pa, project, smart_app, patient="Patient/1")
    assert response.status_code == 303 and "disabled" in text(pa.get(response["Location"]))
    assert not LaunchContext.objects.exists()


def test_other_projects_client_is_404(pa, project, other_project):
    foreign = ClientApplicationFactory(project=other_project, launch_uri=LAUNCH_URI)
    assert launch(pa, project, foreign, patient="Patient/1").status_code == 404
    assert launch(pa, other_project, foreign, patient="Patient/1").status_code == 404
    assert not LaunchContext.objects.exists()


def test_non_admins_cannot_launch(client, project, smart_app):
    member = MembershipFactory(project=project, profile_type="Practitioner", admin=False)
    client.force_login(member.user)
    assert launch(client, project, smart_app, patient="Patient/1").status_code == 403
    client.logout()
    assert launch(client, project, smart_app, patient="Patient/1").status_code == 302  # to sign-in
    assert not LaunchContext.objects.exists()


def test_launch_csrf_is_required(project, smart_app, admin_user):
    from django.test import Client

    http = Client(enforce_csrf_checks=True)
    http.force_login(admin_user)
    assert launch(http, project, smart_app, patient="Patient/1").status_code == 403
    assert not LaunchContext.objects.exists()


def test_launched_app_gets_the_patient_in_its_token(pa, project, smart_app, alice):
    """The whole EHR launch: admin launches, the app authorizes with ``launch``, the token has the context."""
    params = query(launch(pa, project, smart_app, patient=f"Patient/{alice}")["Location"])
    flow = Flow(pa, smart_app)  # the admin's browser: already signed in
    response = flow.follow(flow.authorize(scope="openid fhirUser launch patient/*.rs", launch=params["launch"],
                                          aud=params["iss"]))
    assert response.status_code == 302 and response["Location"].startswith(REDIRECT_URI), response
    body = flow.token(query(response["Location"])["code"]).json()
    assert body["patient"] == alice and body["need_patient_banner"] is True
    assert "encounter" not in body
    api = pa.get(f"/fhir/R4/Patient/{alice}", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert api.status_code == 200 and api.json()["id"] == alice


# --- in Chromium: the form-action CSP lets "Launch app" reach the app ---------------------------

BROWSER_LAUNCH_URI = "http://127.0.0.1:8977/launch"
BROWSER_REDIRECT_URI = "http://127.0.0.1:8976/callback"


@pytest.mark.django_db(transaction=True)
def test_launch_app_in_a_browser(browser, site):  # noqa: F811 - fixtures from test_browser
    """Chromium applies form-action to the redirect after a form POST: the page allows the app's origin."""
    import base64
    import hashlib
    import secrets
    from urllib.parse import urlencode

    from medplum_auth import services
    from medplum_auth.models import Login

    base, project = site["url"], site["project"]
    app, _secret = services.create_client(project, "Growth chart", redirect_uris=[BROWSER_REDIRECT_URI],
                                          public=True, launch_uri=BROWSER_LAUNCH_URI)
    alice = Repository(project.pk, None).create(
        "Patient", {"resourceType": "Patient", "name": [{"family": "Anders", "given": ["Alice"]}]}).resource_id
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{base}/project-admin/login/")
    page.get_by_label("Email").fill("ada@sunrise.example")
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/project-admin/p/{project.pk}/clients/")

    landed: list[str] = []

    def app_page(route: Any) -> None:
        landed.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="app")

    page.route("http://127.0.0.1:8976/**", app_page)
    page.route("http://127.0.0.1:8977/**", app_page)
    page.goto(f"{base}/project-admin/p/{project.pk}/clients/{app.pk}/")
    page.get_by_label("Patient").fill(f"Patient/{alice}")
    page.get_by_role("button", name="Launch app").click()
    page.wait_for_url("http://127.0.0.1:8977/**")
    params = query(landed[-1])
    assert params["iss"] == f"{base}/fhir/R4"

    # The app's authorization request with the launch; the admin's session signs it in.
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    page.goto(f"{base}/oauth2/authorize?" + urlencode({
        "response_type": "code", "client_id": app.client_id, "redirect_uri": BROWSER_REDIRECT_URI,
        "scope": "openid launch patient/*.rs", "state": "s1", "aud": params["iss"], "launch": params["launch"],
        "code_challenge": challenge, "code_challenge_method": "S256"}))
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url("http://127.0.0.1:8976/**")
    code = query(landed[-1])["code"]
    tokens = page.request.post(f"{base}/oauth2/token", form={
        "grant_type": "authorization_code", "code": code, "redirect_uri": BROWSER_REDIRECT_URI,
        "client_id": app.client_id, "code_verifier": verifier}).json()
    assert tokens["patient"] == alice and tokens["need_patient_banner"] is True
    assert Login.objects.get(launch_id=params["launch"]).launch_patient == f"Patient/{alice}"

