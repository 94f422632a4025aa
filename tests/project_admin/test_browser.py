"""Browser tests: Debian's Chromium driven by Playwright against pytest-django's live server.

A project admin signs in, creates a client with a redirect URI and an access policy, copies the
secret with the page's copy button and uses it at ``/oauth2/token``; rotates and retires the
secret (the old one then gets 401); invites a Patient, who follows the one-time set-password
link, sets a password and signs in through ``/oauth2/authorize`` to get a code at the
registered redirect URI. Screenshots of each page go to ``test-artifacts/project_admin/``.

Never ``playwright install``: the browser is ``/usr/bin/chromium`` (``apt-get install chromium``).
Without it, or without the ``playwright`` package, the test skips; ``MEDPLUM_E2E_REQUIRED=1``
(set by ``.ci/run``) turns that into a failure.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connections

from medplum_auth import services
from medplum_auth.models import ClientApplication, ProjectMembership
from tests.factories import DEFAULT_PASSWORD, UserFactory

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "project_admin"
CHROMIUM = os.environ.get("MEDPLUM_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
REQUIRED = os.environ.get("MEDPLUM_E2E_REQUIRED", "") not in {"", "0"}
# Loopback (RFC 8252): nothing listens there; the browser's navigation is intercepted.
REDIRECT_URI = "http://127.0.0.1:8976/callback"
PATIENT_PASSWORD = "Sunrise-Patient-Passphrase-2026"

pytestmark = pytest.mark.django_db(transaction=True)


def unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (MEDPLUM_E2E_REQUIRED is set)")
    pytest.skip(reason)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install -r requirements.txt)")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    # Playwright's sync API keeps an event loop in this thread; the ORM calls of the test itself
    # are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def site(live_server: Any, settings: Any) -> Iterator[dict[str, Any]]:
    """The live server as the issuer, and a project with its admin and a Patient policy."""
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "ISSUER": live_server.url}
    project = services.create_project("Sunrise Clinic", description="Outpatient clinic")
    admin = UserFactory(email="ada@sunrise.example", username="ada@sunrise.example", first_name="Ada",
                        last_name="Admin")
    ProjectMembership.objects.create(project=project, user=admin, profile_type="Practitioner", admin=True,
                                     profile_display="Ada Admin")
    policy = services.create_access_policy(project, "Patient self-access", [
        {"resourceType": "Patient", "criteria": "Patient?_id=%patient.id", "interaction": ["read"]},
        {"resourceType": "Observation", "criteria": "Observation?subject=%patient", "interaction": ["read", "search"],
         "hiddenFields": ["note"]},
    ])
    services.create_access_policy(project, "Practitioner read-all", [{"resourceType": "*", "readonly": True}])
    yield {"url": live_server.url, "project": project, "admin": admin, "policy": policy}
    # Under Playwright's sync API the test's connection belongs to a context pytest-django does
    # not close; left open, it keeps PostgreSQL from dropping the test database.
    connections.close_all()


def shot(page: Any, name: str, full_page: bool = True) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def client_credentials(page: Any, base: str, client_id: str, secret: str) -> int:
    response = page.request.post(f"{base}/oauth2/token", form={"grant_type": "client_credentials"},
                                 headers={"Authorization": basic(client_id, secret)}, fail_on_status_code=False)
    return response.status


def copy_from_page(page: Any, field_id: str) -> str:
    """Click the field's copy button and read what landed on the clipboard."""
    page.locator(f'[data-copy="{field_id}"]').click()
    page.wait_for_function("() => document.querySelector('.copy-status').textContent === 'Copied'")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied == page.locator(f"#{field_id}").input_value()
    return copied


def test_project_admin_in_a_browser(browser: Any, site: dict[str, Any]) -> None:
    base, project = site["url"], site["project"]
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(15_000)

    # --- Sign in as the project admin -------------------------------------------------------
    page.goto(f"{base}/project-admin/")
    assert "/project-admin/login/" in page.url
    shot(page, "01-sign-in")
    page.get_by_label("Email").fill("ada@sunrise.example")
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/project-admin/p/{project.pk}/clients/")
    shot(page, "02-clients-empty")

    # --- Create New Client ------------------------------------------------------------------
    page.get_by_role("link", name="Create New Client").click()
    page.get_by_label("Name").fill("Sunrise patient portal")
    page.get_by_label("Description").fill("Lets patients see their lab results.")
    page.get_by_label("Redirect URIs", exact=True).fill(REDIRECT_URI)
    page.get_by_label("Access policy").select_option(label="Patient self-access")
    page.get_by_label("Confidential").check()
    page.locator("details.advanced summary").click()
    page.get_by_label("Access token lifetime (s)").fill("900")
    shot(page, "03-create-client")
    page.get_by_role("button", name="Create client").click()
    page.wait_for_selector("#client-secret")
    shot(page, "04-client-created-secret-once")
    client = ClientApplication.objects.get(project=project)
    assert client.access_policy_id == site["policy"].pk and client.redirect_uri_list == [REDIRECT_URI]
    client_id = copy_from_page(page, "client-id")
    secret = copy_from_page(page, "client-secret")
    assert client_id == client.client_id and len(secret) == 64
    authorize_url = page.locator("#authorize-url").input_value()
    verifier = page.locator("#code-verifier").input_value()
    assert authorize_url.startswith(f"{base}/oauth2/authorize?")
    assert parse_qs(urlsplit(authorize_url).query)["redirect_uri"] == [REDIRECT_URI]

    # The copied secret works at the token endpoint (client_credentials).
    assert client_credentials(page, base, client_id, secret) == 200

    # A reload does not show the secret again.
    page.reload()
    assert page.locator("#client-secret").count() == 0
    assert secret not in page.content()

    # --- Rotate, then retire the old secret --------------------------------------------------
    page.get_by_role("link", name="Go to the client").click()
    shot(page, "05-client-detail")
    page.get_by_role("button", name="Rotate secret").click()
    page.wait_for_selector("#client-secret")
    new_secret = copy_from_page(page, "client-secret")
    assert new_secret != secret
    assert client_credentials(page, base, client_id, secret) == 200  # still works while retiring
    assert client_credentials(page, base, client_id, new_secret) == 200
    page.get_by_role("link", name="I have copied the secret — continue").click()
    page.get_by_role("link", name="Retire old secret").click()
    shot(page, "06-retire-confirm")
    page.get_by_role("button", name="Retire old secret").click()
    page.wait_for_selector("text=Old secret retired")
    assert client_credentials(page, base, client_id, secret) == 401
    assert client_credentials(page, base, client_id, new_secret) == 200
    assert new_secret not in page.content() and secret not in page.content()
    clients_page = page.goto(f"{base}/project-admin/p/{project.pk}/clients/")
    assert clients_page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in clients_page.headers["content-security-policy"]
    shot(page, "07-clients")

    # --- Access policies --------------------------------------------------------------------
    page.get_by_role("link", name="Access policies").click()
    shot(page, "08-policies")
    page.get_by_role("link", name="Patient self-access").click()
    shot(page, "09-policy-edit")

    # --- Invite a Patient, who sets a password through the one-time link --------------------
    page.get_by_role("link", name="Members").click()
    page.get_by_role("link", name="Invite a member").click()
    page.get_by_label("Patient").check()
    page.get_by_label("First name").fill("Pat")
    page.get_by_label("Last name").fill("Lee")
    page.get_by_label("Email").fill("pat.lee@sunrise.example")
    page.get_by_label("Access policy").select_option(label="Patient self-access")
    shot(page, "10-invite")
    page.get_by_role("button", name="Invite").click()
    page.wait_for_selector("#set-password-link")
    shot(page, "11-set-password-link-once")
    link = copy_from_page(page, "set-password-link")
    assert link.startswith(f"{base}/project-admin/set-password/")

    patient_context = browser.new_context(viewport={"width": 390, "height": 844})
    patient = patient_context.new_page()
    patient.set_default_timeout(15_000)
    patient.goto(link)
    shot(patient, "12-set-password-phone")
    patient.get_by_label("New password", exact=True).fill(PATIENT_PASSWORD)
    patient.get_by_label("New password confirmation").fill(PATIENT_PASSWORD)
    patient.get_by_role("button", name="Set password").click()
    patient.wait_for_selector("text=Your password is set")

    # --- The Patient signs in through /oauth2/authorize and gets a code ----------------------
    landed: list[str] = []

    def callback(route: Any) -> None:
        landed.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="signed in")

    patient.route("http://127.0.0.1:8976/**", callback)
    patient.goto(authorize_url)
    patient.get_by_label("Email").fill("pat.lee@sunrise.example")
    patient.get_by_label("Password").fill(PATIENT_PASSWORD)
    patient.get_by_role("button", name="Sign in").click()
    patient.wait_for_load_state()
    if patient.get_by_role("button", name="Allow").count():
        shot(patient, "13-consent-phone")
        patient.get_by_role("button", name="Allow").click()
    patient.wait_for_url("http://127.0.0.1:8976/**")
    assert len(landed) == 1
    callback_url = urlsplit(landed[0])
    assert f"{callback_url.scheme}://{callback_url.netloc}{callback_url.path}" == REDIRECT_URI
    params = {k: v[0] for k, v in parse_qs(callback_url.query).items()}
    assert params["code"] and params["iss"] == base
    assert params["state"] == parse_qs(urlsplit(authorize_url).query)["state"][0]

    # The code and the page's verifier redeem at the token endpoint with the new secret.
    tokens = page.request.post(f"{base}/oauth2/token", form={
        "grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier}, headers={"Authorization": basic(client_id, new_secret)})
    assert tokens.status == 200, tokens.text()
    access_token = tokens.json()["access_token"]
    assert page.request.get(f"{base}/oauth2/userinfo",
                            headers={"Authorization": f"Bearer {access_token}"}).status == 200

    # --- Preview what the Patient may do ----------------------------------------------------
    page.goto(f"{base}/project-admin/p/{project.pk}/policies/preview/")
    page.get_by_label("Member, client or policy").select_option(label="Pat Lee (Patient, Patient self-access)")
    page.get_by_label("FHIR requests").fill("GET Observation?subject=Patient/456\nGET Observation\n"
                                            "PUT Patient/123\nGET Encounter")
    page.get_by_role("button", name="Preview").click()
    page.wait_for_selector("#answers")
    assert page.locator(".outcome.filtered").count() == 2 and page.locator(".outcome.forbidden").count() == 2
    shot(page, "14-policy-preview")

    # --- Members and sessions; revoking the Patient's sessions kills the token ---------------
    page.get_by_role("link", name="Members").click()
    shot(page, "15-members")
    page.get_by_role("link", name="Sessions").click()
    page.wait_for_url(f"{base}/project-admin/p/{project.pk}/sessions/")
    page.wait_for_selector("tbody tr")  # count() does not wait: under load it ran before the page loaded
    assert page.locator("tbody tr").count() >= 1
    shot(page, "16-sessions")
    page.get_by_role("button", name="Revoke all of pat.lee@sunrise.example").first.click()
    page.wait_for_selector("text=Revoked")
    assert page.request.get(f"{base}/oauth2/userinfo",
                            headers={"Authorization": f"Bearer {access_token}"}).status == 401

    # --- A phone's width --------------------------------------------------------------------
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/project-admin/p/{project.pk}/clients/")
    shot(page, "17-clients-phone")

    patient_context.close()
    context.close()
