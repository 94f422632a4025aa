"""Browser test: an admin restricts an app with an access policy, and the app is restricted.

The admin assigns a policy to a client on its page; a Practitioner (no policy of their own) signs
in through the app in Chromium; the consent page shows the scope the policy forbids as not
available; the app's FHIR calls with the token are restricted; the preview ("signing in through
client") gives the same decisions. Screenshots go to ``test-artifacts/project_admin/``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from fhir_api.repository import Repository
from medplum_auth import services
from medplum_auth.models import ClientApplication
from tests.factories import DEFAULT_PASSWORD, MembershipFactory, UserFactory
from tests.project_admin.test_browser import REDIRECT_URI, browser, shot, site  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def test_admin_restricts_an_app_with_a_client_policy(browser: Any, site: dict[str, Any]) -> None:  # noqa: F811
    base, project = site["url"], site["project"]
    services.create_access_policy(project, "Patients only", [{"resourceType": "Patient",
                                                               "interaction": ["read", "search"]}])
    app, _secret = services.create_client(project, "Chart app", redirect_uris=REDIRECT_URI, public=True)
    doctor = UserFactory(email="dee@sunrise.example", username="dee@sunrise.example", first_name="Dee",
                         last_name="Doctor")
    MembershipFactory(project=project, user=doctor, profile_type="Practitioner", profile_display="Dee Doctor")
    repository = Repository(project.pk, None)
    patient_id = repository.create("Patient", {"resourceType": "Patient", "name": [{"family": "Lee"}]}).content["id"]
    repository.create("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "HR"},
                                      "subject": {"reference": f"Patient/{patient_id}"}})

    # --- The admin assigns the policy on the client's page ------------------------------------
    admin = browser.new_context(viewport={"width": 1280, "height": 900})
    page = admin.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{base}/project-admin/login/")
    page.get_by_label("Email").fill("ada@sunrise.example")
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/project-admin/p/{project.pk}/clients/")
    page.get_by_role("link", name="Chart app").click()
    rule = page.locator("#client-policy-rule").inner_text()
    assert "restricts the app for every user who signs in through it" in rule
    page.get_by_label("Access policy").select_option(label="Patients only")
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_load_state()
    app.refresh_from_db()
    assert app.access_policy is not None and app.access_policy.name == "Patients only"
    shot(page, "20-client-with-policy")

    # --- The practitioner signs in through the app ------------------------------------------
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({"response_type": "code", "client_id": app.client_id, "redirect_uri": REDIRECT_URI,
                       "scope": "openid profile user/Patient.rs user/Observation.rs", "state": "s-1",
                       "code_challenge": challenge, "code_challenge_method": "S256"})
    user = browser.new_context(viewport={"width": 1280, "height": 900})
    doc = user.new_page()
    doc.set_default_timeout(15_000)
    landed: list[str] = []

    def callback(route: Any) -> None:
        landed.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="signed in")

    doc.route("http://127.0.0.1:8976/**", callback)
    doc.goto(f"{base}/oauth2/authorize?{query}")
    doc.get_by_label("Email").fill("dee@sunrise.example")
    doc.get_by_label("Password").fill(DEFAULT_PASSWORD)
    doc.get_by_role("button", name="Sign in").click()
    doc.wait_for_selector("text=not available: this app's access policy does not allow it")
    assert doc.locator('input[value="user/Observation.rs"]').count() == 0
    assert doc.locator('input[value="user/Patient.rs"]').is_checked()
    shot(doc, "21-consent-with-unavailable-scope")
    doc.get_by_role("button", name="Allow").click()
    doc.wait_for_url("http://127.0.0.1:8976/**")
    code = parse_qs(urlsplit(landed[0]).query)["code"][0]
    tokens = doc.request.post(f"{base}/oauth2/token", form={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
        "client_id": app.client_id, "code_verifier": verifier})
    assert tokens.status == 200, tokens.text()
    assert tokens.json()["scope"] == "openid profile user/Patient.rs"
    bearer = {"Authorization": f"Bearer {tokens.json()['access_token']}", "Accept": "application/fhir+json"}

    # --- The app's FHIR calls are restricted -------------------------------------------------
    patients = doc.request.get(f"{base}/fhir/R4/Patient", headers=bearer)
    assert patients.status == 200 and patients.json()["total"] == 1
    observations = doc.request.get(f"{base}/fhir/R4/Observation", headers=bearer, fail_on_status_code=False)
    assert observations.status == 403
    assert observations.json()["resourceType"] == "OperationOutcome"

    # --- The preview gives the same answers ---------------------------------------------------
    page.get_by_role("link", name="Preview a member through this client").click()
    page.get_by_label("Member, client or policy").select_option(label="Dee Doctor (Practitioner, no policy)")
    assert page.get_by_label("Signing in through client").input_value() == str(app.pk)
    page.get_by_label("Scopes").fill("openid profile user/Patient.rs")
    page.get_by_label("FHIR requests").fill("GET Observation\nGET Patient")
    page.get_by_role("button", name="Preview").click()
    page.wait_for_selector("#answers")
    rows = page.locator("#answers tbody tr")
    assert rows.nth(0).locator(".outcome").first.text_content() == "forbidden"
    assert "Forbidden by the client's policy and the scopes." in rows.nth(0).text_content()
    assert rows.nth(1).locator(".outcome").first.text_content() == "allowed"
    shot(page, "22-preview-through-client")
    assert ClientApplication.objects.get(pk=app.pk).access_policy.name == "Patients only"
    user.close()
    admin.close()
