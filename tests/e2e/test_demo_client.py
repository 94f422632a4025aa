"""The demo client app (``examples/demo_client``) walked in Chromium against the live provider.

The provider is pytest-django's live server seeded by ``medplum_seed_demo`` (its public client
re-pointed at the demo app's port); the demo app is served from this process on a free port and
talks to the provider over HTTP only. The walk: Sign in → deny consent (readable error) → Sign in
→ allow → ID token claims, scopes, project/profile/patient, userinfo, the Patient's record →
refresh → sign out (RP-initiated logout revokes the login) → a forged callback (state mismatch) →
an expired code → a SMART EHR launch from Project Admin's "Launch app" with patient context → a
Practitioner's patient list. A screenshot of each step goes to ``test-artifacts/demo_client/``; with
``MEDPLUM_UPDATE_DOCS_IMAGES=1`` also to ``docs/images/demo-client/`` (the README shows them).
"""

from __future__ import annotations

import os
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import make_server

import pytest
from django.core.management import call_command

from examples.demo_client.app import Config, DemoClient, QuietHandler, ThreadingWSGIServer
from medplum_auth import services
from medplum_auth.management.commands import medplum_seed_demo as demo
from medplum_auth.models import ClientApplication, Login, ProjectMembership
from tests.project_admin.test_browser import browser  # noqa: F401 - the Chromium fixture

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "demo_client"
DOCS_IMAGES = ROOT / "docs" / "images" / "demo-client"

# Serialized rollback like the other e2e tests: a plain flush would drop the content types the next
# e2e tests' rollback expects (UNIQUE constraint failures on SQLite).
pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True),
              pytest.mark.spec("issue 14: the demo client app walks the guide")]


@pytest.fixture
def demo_client(live_server: Any, settings: Any) -> Iterator[DemoClient]:
    """The demo app on a free port, against the live provider seeded like ``python3 dev.py demo``."""
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "ISSUER": live_server.url}
    call_command("medplum_seed_demo", stdout=open(os.devnull, "w"))  # noqa: SIM115 - closed with the process
    server = make_server("127.0.0.1", 0, lambda environ, start: [], server_class=ThreadingWSGIServer,
                         handler_class=QuietHandler)
    base = f"http://127.0.0.1:{server.server_port}"
    public = ClientApplication.objects.get(client_id=demo.PUBLIC_CLIENT_ID)
    services.update_client(public, redirect_uris=[f"{base}/callback"], post_logout_redirect_uris=[f"{base}/signed-out"],
                           launch_uri=f"{base}/launch")
    app = DemoClient(Config(issuer=live_server.url, client_id=demo.PUBLIC_CLIENT_ID, base_url=base))
    server.set_app(app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app
    finally:
        server.shutdown()
        server.server_close()
        from django.db import connections

        connections.close_all()


def shot(page: Any, name: str, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("MEDPLUM_UPDATE_DOCS_IMAGES"):
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_IMAGES / path.name)


def sign_in(page: Any, email: str, password: str) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def userinfo_status(issuer: str, access_token: str) -> int:
    request = urllib.request.Request(f"{issuer}/oauth2/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def only_session(app: DemoClient) -> Any:
    (session,) = [s for s in app.sessions.values() if s.tokens]
    return session


def test_demo_client_walks_the_guide(browser: Any, demo_client: DemoClient, live_server: Any,  # noqa: F811
                                     settings: Any) -> None:
    app, issuer = demo_client, live_server.url
    base = app.config.base_url
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    page = context.new_page()
    page.set_default_timeout(15_000)

    # --- 1. The app, signed out; its Sign in goes to the provider with PKCE, state and nonce ------
    page.goto(base + "/")
    shot(page, "01-app-signed-out")
    with page.expect_request(lambda r: r.url.startswith(f"{issuer}/oauth2/authorize")) as authorize:
        page.locator("#sign-in").click()
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorize.value.url).query))
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["state"] and params["nonce"] and params["redirect_uri"] == f"{base}/callback"
    assert params["response_type"] == "code" and "openid" in params["scope"].split()
    sign_in(page, demo.PATIENT["email"], demo.PATIENT["password"])
    page.wait_for_selector("button[value=deny]")
    shot(page, "02-provider-consent", full_page=True)

    # --- 2. Denied consent: the app says so in words, and holds no tokens ------------------------
    page.locator("button[value=deny]").click()
    page.wait_for_url(f"{base}/callback?*")
    assert page.locator("h1").inner_text() == "You chose not to share your data"
    assert page.locator("#error-code").inner_text() == "access_denied"
    assert not any(s.tokens for s in app.sessions.values())
    shot(page, "03-error-consent-denied")

    # --- 3. Sign in again and allow: claims, scopes, context, userinfo and the FHIR record --------
    page.get_by_role("button", name="Sign in again").click()
    page.locator("button[value=allow]").click()
    page.wait_for_url(f"{base}/")
    session = only_session(app)
    patient_id = session.tokens["patient"]
    membership = ProjectMembership.objects.get(user__email=demo.PATIENT["email"])
    assert session.tokens["profile"]["reference"] == membership.profile == f"Patient/{patient_id}"
    assert session.tokens["project"]["reference"] == f"Project/{membership.project_id}"
    assert page.locator("h1").inner_text() == "Welcome, Homer Simpson"
    claims = page.locator("#id-claims").inner_text()
    assert f"nonce\t{params['nonce']}" not in claims  # the first request's nonce was for the denied attempt
    assert session.id_claims["nonce"] != params["nonce"] and session.id_claims["iss"] == issuer
    assert session.id_claims["aud"] == demo.PUBLIC_CLIENT_ID and "nonce" in claims
    fields = page.locator("#token-fields").inner_text()
    assert f"Patient/{patient_id}" in fields and str(membership.project_id) in fields and patient_id in fields
    chips = page.locator(".chip").all_inner_texts()
    assert set(chips) == set(session.tokens["scope"].split()) and "user/Observation.rs" in chips
    assert demo.PATIENT["email"] in page.locator("#userinfo").inner_text()
    assert "Homer Simpson" in page.locator("#fhir-patient").inner_text()
    assert page.locator("#observations tr").count() == 1 + 3  # header + the 3 seeded Observations
    shot(page, "04-app-signed-in", full_page=True)

    # --- 4. Refresh: a rotated refresh token, the old one no longer works -------------------------
    first_refresh = session.tokens["refresh_token"]
    page.locator("#refresh").click()
    page.wait_for_selector("#refreshed")
    assert session.tokens["refresh_token"] != first_refresh
    login = Login.objects.get(user__email=demo.PATIENT["email"], revoked_at__isnull=True)
    shot(page, "05-app-refreshed")

    # --- 5. Sign out (RP-initiated logout): the login is revoked, the token stops working ---------
    access_token = session.tokens["access_token"]
    assert userinfo_status(issuer, access_token) == 200
    page.locator("#sign-out").click()
    page.wait_for_url(f"{base}/signed-out?*")
    assert page.locator("#signed-out").is_visible()
    login.refresh_from_db()
    assert login.revoked_at is not None and login.revoked_reason == "rp_logout"
    assert userinfo_status(issuer, access_token) == 401
    shot(page, "06-app-signed-out")

    # --- 6. A callback this browser did not start: refused before any token request ---------------
    tokens_before = Login.objects.count()
    page.goto(f"{base}/callback?code=forged-code&state=forged-state&iss={issuer}")
    assert page.locator("h1").inner_text() == "This sign-in response was not started here"
    assert page.locator("#error-code").inner_text() == "state_mismatch"
    assert Login.objects.count() == tokens_before
    shot(page, "07-error-state-mismatch")

    # --- 7. An expired code: issued with no lifetime left, it is expired when the app trades it -----
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "AUTHORIZATION_CODE_LIFETIME": 0}
    page.goto(base + "/login")
    sign_in(page, demo.PATIENT["email"], demo.PATIENT["password"])  # consent is remembered
    page.wait_for_selector("#error-code")
    assert page.url.startswith(f"{base}/callback?")
    assert page.locator("h1").inner_text() == "That sign-in link expired"
    assert page.locator("#error-code").inner_text() == "invalid_grant"
    assert not any(s.tokens for s in app.sessions.values())
    shot(page, "08-error-code-expired")
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "AUTHORIZATION_CODE_LIFETIME": 60}

    # --- 8. SMART EHR launch: Project Admin's "Launch app" opens the app with a patient ------------
    practitioner = context.browser.new_context(viewport={"width": 1000, "height": 760}).new_page()
    practitioner.set_default_timeout(15_000)
    practitioner.goto(f"{issuer}/project-admin/login/")
    sign_in(practitioner, demo.PRACTITIONER["email"], demo.PRACTITIONER["password"])
    public = ClientApplication.objects.get(client_id=demo.PUBLIC_CLIENT_ID)
    practitioner.goto(f"{issuer}/project-admin/p/{public.project_id}/clients/{public.pk}/")
    practitioner.locator("#launch-patient").fill(f"Patient/{patient_id}")
    shot(practitioner, "09-provider-launch-page")
    practitioner.get_by_role("button", name="Launch app").click()
    practitioner.wait_for_url(f"{issuer}/oauth2/**")
    if practitioner.get_by_label("Password").count():
        sign_in(practitioner, demo.PRACTITIONER["email"], demo.PRACTITIONER["password"])
    practitioner.locator("button[value=allow]").click()
    practitioner.wait_for_url(f"{base}/")
    assert patient_id in practitioner.locator("#launch-banner").inner_text()
    assert "Homer Simpson" in practitioner.locator("#fhir-patient").inner_text()
    assert practitioner.locator("#observations tr").count() == 1 + 3
    launched = [s for s in app.sessions.values() if s.tokens and s.launch]
    assert len(launched) == 1 and launched[0].tokens["patient"] == patient_id
    assert "launch" in launched[0].tokens["scope"].split()
    assert launched[0].tokens["profile"]["reference"].startswith("Practitioner/")
    shot(practitioner, "10-app-ehr-launch", full_page=True)

    # --- 9. A Practitioner signing in without a patient: their patients' list ---------------------
    practitioner.locator("#sign-out").click()
    practitioner.wait_for_url(f"{base}/signed-out?*")
    practitioner.goto(base + "/login")
    sign_in(practitioner, demo.PRACTITIONER["email"], demo.PRACTITIONER["password"])
    practitioner.locator("button[value=allow]").click()
    practitioner.wait_for_url(f"{base}/")
    assert "Homer Simpson" in practitioner.locator("#patients").inner_text()
    shot(practitioner, "11-app-practitioner-patients")
    context.close()
