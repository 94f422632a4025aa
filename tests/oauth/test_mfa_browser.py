"""Browser tests (Debian Chromium, Playwright) of the second factor.

* An authenticator app: enrolled on the account page by reading the key off the page (what
  scanning the QR code gives an app), then the code flow asks for password and code.
* A security key: Chromium's virtual authenticator (CDP ``WebAuthn.addVirtualAuthenticator``)
  registers on the account page and answers the sign-in's "Use a security key".
* An MFA-required project: a member without a second factor enrolls during the code flow.

Screenshots go to ``test-artifacts/mfa/``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
import pytest

from medplum_auth import mfa, services
from medplum_auth.models import Login, WebAuthnCredential
from tests.factories import DEFAULT_PASSWORD
from tests.project_admin.test_browser import REDIRECT_URI, browser, site  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(transaction=True)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "mfa"


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def app(site: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    """A public client and a Patient member of the site's project."""
    client, _ = services.create_client(site["project"], "Sunrise portal", redirect_uris=REDIRECT_URI, public=True)
    invitation = services.invite_member(site["project"], "pat@sunrise.example", profile_type="Patient",
                                        first_name="Pat", last_name="Lee", password=DEFAULT_PASSWORD,
                                        access_policy=site["policy"])
    user = invitation.membership.user
    return {**site, "client": client, "user": user}


def authorize_url(base: str, client_id: str, redirect_uri: str = REDIRECT_URI) -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                       "scope": "openid", "state": "s-mfa", "code_challenge": challenge,
                       "code_challenge_method": "S256"})
    return f"{base}/oauth2/authorize?{query}", verifier


def catch_callback(page: Any) -> list[str]:
    """Answer the loopback redirect URI (nothing listens there) on ``page`` (or a whole context)."""
    landed: list[str] = []

    def callback(route: Any) -> None:
        landed.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="signed in")

    page.route("http://127.0.0.1:8976/**", callback)
    return landed


def redeem(page: Any, base: str, client_id: str, landed: str, verifier: str,
           redirect_uri: str = REDIRECT_URI) -> dict[str, Any]:
    code = parse_qs(urlsplit(landed).query)["code"][0]
    response = page.request.post(f"{base}/oauth2/token", form={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "client_id": client_id,
        "code_verifier": verifier})
    assert response.status == 200, response.text()
    return response.json()


def password_step(page: Any, base: str, url: str) -> None:
    """Open the authorization request and pass the password: the second step comes next."""
    page.goto(url)
    page.get_by_label("Email").fill("pat@sunrise.example")
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/oauth2/mfa")


def sign_in_on_account_page(page: Any, base: str) -> None:
    page.goto(f"{base}/oauth2/account/security")
    assert "/oauth2/account/signin" in page.url
    page.get_by_label("Email").fill("pat@sunrise.example")
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_authenticator_app_enroll_then_sign_in_with_code(browser: Any, app: dict[str, Any]) -> None:  # noqa: F811
    base, client_id = app["url"], app["client"].client_id
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    sign_in_on_account_page(page, base)
    page.wait_for_url(f"{base}/oauth2/account/security")
    shot(page, "01-account-page")
    secret = page.locator("#totp-secret").text_content().strip()  # what the QR code carries
    assert page.locator("img.qr").get_attribute("src").startswith("data:image/png;base64,")
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on the authenticator app").click()
    page.wait_for_selector("#recovery-codes")
    assert page.locator("#recovery-codes li").count() == 10
    shot(page, "02-authenticator-on-recovery-codes")
    assert mfa.factors(app["user"]) == {"otp"}
    context.close()  # signed out: a new browser profile

    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    landed = catch_callback(page)
    url, verifier = authorize_url(base, client_id)
    password_step(page, base, url)
    shot(page, "03-sign-in-asks-for-code")
    page.get_by_label("Code from your authenticator app").fill("000000")
    page.get_by_role("button", name="Verify").click()
    page.wait_for_selector("text=That code is not valid")
    page.get_by_label("Code from your authenticator app").fill(pyotp.TOTP(secret).at(
        time.time(), counter_offset=1))
    page.get_by_role("button", name="Verify").click()
    if page.get_by_role("button", name="Allow").count():
        page.get_by_role("button", name="Allow").click()
    page.wait_for_url("http://127.0.0.1:8976/**")
    tokens = redeem(page, base, client_id, landed[0], verifier)
    claims = json.loads(base64.urlsafe_b64decode(tokens["id_token"].split(".")[1] + "=="))
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    context.close()


@pytest.fixture
def callback_server() -> Any:
    """A real loopback redirect URI: Chromium's request interception does not see navigations
    of a page that has a CDP session of its own (the virtual authenticator's)."""
    import http.server
    import threading

    landed: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            landed.append(f"http://127.0.0.1:{self.server.server_address[1]}{self.path}")
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"signed in")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/callback", landed
    server.shutdown()


def test_security_key_register_then_sign_in(browser: Any, app: dict[str, Any], callback_server: Any) -> None:  # noqa: F811
    redirect_uri, landed = callback_server
    base = app["url"]
    client_id = services.create_client(app["project"], "Key app", redirect_uris=redirect_uri, public=True)[0].client_id
    assert urlsplit(base).hostname == "localhost"  # WebAuthn needs a domain as RP id, not an IP address
    context = browser.new_context(viewport={"width": 1000, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "usb", "hasResidentKey": False, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True}})
    sign_in_on_account_page(page, base)
    page.wait_for_url(f"{base}/oauth2/account/security")
    page.get_by_label("Name of the new key").fill("Virtual key")
    page.get_by_role("button", name="Add a security key").click()
    page.wait_for_selector("text=Security key “Virtual key” added.")
    assert page.locator("#recovery-codes li").count() == 10  # the first second factor
    shot(page, "04-security-key-added")
    key = WebAuthnCredential.objects.get(user=app["user"])
    assert key.name == "Virtual key" and key.public_key
    assert mfa.factors(app["user"]) == {"hwk"}

    context.clear_cookies()  # signed out; the same page keeps its virtual authenticator
    url, verifier = authorize_url(base, client_id, redirect_uri)
    password_step(page, base, url)
    shot(page, "05-sign-in-offers-security-key")
    assert page.get_by_label("Code from your authenticator app").count() == 0  # no app enrolled
    with page.expect_navigation(url=f"{redirect_uri}?**"):
        page.get_by_role("button", name="Use a security key").click()
    tokens = redeem(page, base, client_id, landed[0], verifier, redirect_uri)
    login = Login.objects.get(pk=json.loads(
        base64.urlsafe_b64decode(tokens["access_token"].split(".")[1] + "=="))["login_id"])
    assert login.amr == "pwd hwk mfa"
    key.refresh_from_db()
    assert key.last_used_at is not None
    context.close()


def test_mfa_required_project_makes_a_member_enroll_during_sign_in(browser: Any, app: dict[str, Any]) -> None:  # noqa: F811
    base, client_id, project = app["url"], app["client"].client_id, app["project"]
    services.update_project(project, mfa_required=True)
    context = browser.new_context(viewport={"width": 1000, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    landed = catch_callback(page)
    url, verifier = authorize_url(base, client_id)
    password_step(page, base, url)
    assert page.get_by_role("heading", name="Set up two-step sign-in").count() == 1
    assert "Sunrise Clinic requires a second step" in page.locator("p.client").text_content()
    shot(page, "06-required-enrollment")
    page.get_by_text("Can't scan it?").click()
    secret = page.locator("#totp-secret").text_content().strip()
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on two-step sign-in").click()
    page.wait_for_selector("#recovery-codes")
    shot(page, "07-recovery-codes")
    page.get_by_role("link", name="I have saved them — continue").click()
    if page.get_by_role("button", name="Allow").count():
        page.get_by_role("button", name="Allow").click()
    page.wait_for_url("http://127.0.0.1:8976/**")
    assert redeem(page, base, client_id, landed[0], verifier)["access_token"]
    assert mfa.factors(app["user"]) == {"otp"}
    context.close()
