"""Browser test: "Forgot password?" in Debian's Chromium, the email through a real SMTP server.

A Patient starts a sign-in at ``/oauth2/authorize``, clicks "Forgot password?", asks for a link;
the email arrives at an aiosmtpd server (Django's SMTP backend); the Patient opens the link,
sets a new password, continues the sign-in with it and gets a code at the redirect URI. A second
use of the link, and the old password, fail. Screenshots go to ``test-artifacts/oauth/``.

Never ``playwright install``: the browser is ``/usr/bin/chromium`` (``apt-get install chromium``);
see ``tests/project_admin/test_browser.py`` for the skip rules (``MEDPLUM_E2E_REQUIRED``).
"""

from __future__ import annotations

import email
import email.policy
import re
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from medplum_auth.models import Login
from tests.factories import DEFAULT_PASSWORD, ClientApplicationFactory, MembershipFactory, ProjectFactory, UserFactory
from tests.oauth.conftest import pkce_pair
from tests.project_admin.test_browser import ARTIFACTS, browser, unavailable  # noqa: F401 (the fixture)

REDIRECT_URI = "http://127.0.0.1:8977/callback"
NEW_PASSWORD = "Harbour-Lights-Evening-2026"
SHOTS = ARTIFACTS.parent / "oauth"

pytestmark = pytest.mark.django_db(transaction=True)


class Mailbox:
    """An aiosmtpd handler keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"

    def wait(self, count: int, timeout: float = 15) -> list[email.message.EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.messages) >= count, f"{len(self.messages)} messages arrived, {count} expected"
        return self.messages


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_server(settings: Any) -> Iterator[Mailbox]:
    """A real SMTP server on a free port, and Django's SMTP backend pointed at it."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        unavailable("the aiosmtpd package is not installed (pip install -r requirements.txt)")
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = controller.hostname, controller.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.DEFAULT_FROM_EMAIL = "Sunrise Clinic <no-reply@sunrise.example>"
    try:
        yield mailbox
    finally:
        controller.stop()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_forgot_password_email_new_password_sign_in(browser: Any, live_server: Any, settings: Any,  # noqa: F811
                                                    smtp_server: Mailbox) -> None:
    from django.db import connections

    base = live_server.url
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "ISSUER": base}
    project = ProjectFactory(name="Sunrise Clinic")
    user = UserFactory(email="pat@sunrise.example", username="pat@sunrise.example")
    MembershipFactory(project=project, user=user, profile_type="Patient", profile_display="Pat Lee")
    app = ClientApplicationFactory(project=project, public=True, redirect_uris=REDIRECT_URI, name="Sunrise portal")
    _verifier, challenge = pkce_pair()
    authorize_url = f"{base}/oauth2/authorize?" + urlencode({
        "response_type": "code", "client_id": app.client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
        "state": "st-42", "code_challenge": challenge, "code_challenge_method": "S256"})

    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(15_000)
    landed: list[str] = []

    def callback(route: Any) -> None:
        landed.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="signed in")

    page.route("http://127.0.0.1:8977/**", callback)
    try:
        page.goto(authorize_url)
        assert "/oauth2/signin?rid=" in page.url
        page.get_by_role("link", name="Forgot password?").click()
        page.wait_for_url(f"{base}/oauth2/resetpassword?rid=*")
        page.get_by_label("Email").fill("pat@sunrise.example")
        shot(page, "01-forgot-password")
        page.get_by_role("button", name="Send reset link").click()
        page.wait_for_selector("text=Check your email")
        shot(page, "02-check-your-email")

        [message] = smtp_server.wait(1)
        assert message["To"] == "pat@sunrise.example"
        assert message["Subject"] == "Reset your password"
        assert "no-reply@sunrise.example" in message["From"]
        body = message.get_body(preferencelist=("plain",)).get_content()
        link = re.search(r"(http://\S+/oauth2/setpassword/\S+)", body).group(1)
        assert link.startswith(f"{base}/oauth2/setpassword/")

        page.goto(link)
        page.wait_for_selector("text=Choose a new password")
        assert "/set-password" in page.url and link.rsplit("/", 1)[1] not in page.url  # the secret left the URL
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_label("New password again").fill(NEW_PASSWORD)
        shot(page, "03-choose-password")
        page.get_by_role("button", name="Set password").click()
        page.wait_for_selector("text=Your new password is set")
        shot(page, "04-password-set")

        page.get_by_role("link", name="Continue signing in").click()
        page.get_by_label("Email").fill("pat@sunrise.example")
        page.get_by_label("Password").fill(NEW_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()
        if page.get_by_role("button", name="Allow").count():
            page.get_by_role("button", name="Allow").click()
        page.wait_for_url("http://127.0.0.1:8977/**")
        assert len(landed) == 1
        params = {k: v[0] for k, v in parse_qs(urlsplit(landed[0]).query).items()}
        assert params["code"] and params["state"] == "st-42" and params["iss"] == base
        assert Login.objects.filter(user=user, client=app, revoked_at__isnull=True).count() == 1

        # The link is spent; the old password no longer works.
        other = browser.new_context().new_page()
        other.goto(link)
        other.wait_for_selector("text=This link no longer works")
        shot(other, "05-link-spent")
        other.goto(authorize_url)
        other.get_by_label("Email").fill("pat@sunrise.example")
        other.get_by_label("Password").fill(DEFAULT_PASSWORD)
        other.get_by_role("button", name="Sign in").click()
        other.wait_for_selector("text=Email or password is invalid")
        assert len(smtp_server.messages) == 1
    finally:
        context.close()
        connections.close_all()
