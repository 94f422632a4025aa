"""Every sign-in throttle the code and docs claim, on every page that signs a user in, with the
same three questions: is exactly the limit of bad passwords refused after (even the right one),
does the right password work once the window is over, and is the count per account *and*
client address (docs/settings.md: ``SIGNIN_MAX_FAILURES`` per email and IP)?

Also the window end of the password-reset and second-factor throttles (their counts are in
``test_passwords.py`` and ``test_mfa.py``); the token endpoint's are in ``test_token_throttle.py``.
"""

from __future__ import annotations

import json
import types
from typing import Any

import pyotp
import pytest
from django.test import Client

from medplum_auth import mfa, signin, throttle
from medplum_auth.models import Login
from tests.factories import DEFAULT_PASSWORD, MembershipFactory, UserFactory
from tests.oauth.conftest import Flow, pkce_pair, query

LIMIT = 3
WINDOW = 900
EMAIL = "pat@example.org"
HERE, ELSEWHERE = "10.0.0.1", "10.0.0.2"


@pytest.fixture(autouse=True)
def limits(settings):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "SIGNIN_MAX_FAILURES": LIMIT, "SIGNIN_FAILURE_WINDOW": WINDOW,
                             "MFA_MAX_FAILURES": LIMIT, "MFA_FAILURE_WINDOW": WINDOW,
                             "PASSWORD_RESET_MAX_REQUESTS": LIMIT, "PASSWORD_RESET_WINDOW": WINDOW}


@pytest.fixture
def clock(monkeypatch):
    """The throttle's clock (only its own): 10 s into a window, movable."""
    now = [(1_900_000_000 // WINDOW) * WINDOW + 10.0]
    monkeypatch.setattr(throttle, "time", types.SimpleNamespace(time=lambda: now[0]))
    return now


def signed_in(http: Client) -> str | None:
    return http.session.get("_auth_user_id")


def project_admin(world: dict[str, Any], email: str, password: str, ip: str) -> tuple[str, str | None]:
    http = Client(REMOTE_ADDR=ip)
    response = http.post("/project-admin/login/", {"username": email, "password": password})
    if response.status_code == 302:
        return "ok", signed_in(http)
    assert response.status_code == 200
    return response.context["form"].non_field_errors()[0], signed_in(http)


def _page(http: Client, response: Any) -> tuple[str, str | None]:
    """A sign-in page's answer: redirected on, or the page again (400) with its error."""
    if response.status_code == 302:
        return "ok", signed_in(http)
    assert response.status_code == 400
    return response.context["error"], signed_in(http)


def html_sign_in(world: dict[str, Any], email: str, password: str, ip: str) -> tuple[str, str | None]:
    http = Client(REMOTE_ADDR=ip)
    rid = query(Flow(http, world["app"]).authorize()["Location"])["rid"]
    return _page(http, http.post("/oauth2/signin", {"rid": rid, "email": email, "password": password}))


def account_sign_in(world: dict[str, Any], email: str, password: str, ip: str) -> tuple[str, str | None]:
    http = Client(REMOTE_ADDR=ip)
    return _page(http, http.post("/oauth2/account/signin", {"email": email, "password": password}))


def auth_login(world: dict[str, Any], email: str, password: str, ip: str) -> tuple[str, str | None]:
    """Medplum's JSON login: who signed in is the user of the Login it made."""
    http = Client(REMOTE_ADDR=ip)
    body = {"email": email, "password": password, "clientId": world["app"].client_id,
            "codeChallenge": pkce_pair()[1], "codeChallengeMethod": "S256", "scope": "openid"}
    response = http.post("/auth/login", json.dumps(body), content_type="application/json")
    if response.status_code == 200:
        return "ok", str(Login.objects.get(pk=response.json()["login"]).user_id)
    assert response.status_code == 400
    return response.json()["issue"][0]["details"]["text"], None


SURFACES = {"project-admin": project_admin, "oauth2-signin": html_sign_in, "account-signin": account_sign_in,
            "auth-login": auth_login}


@pytest.fixture
def world(public_client, patient):
    other = MembershipFactory(project=patient.project, user=UserFactory(email="sam@example.org"))
    return {"app": public_client, "user": str(patient.user.pk), "other": str(other.user.pk)}


@pytest.mark.spec("RFC 6749 §10.10 (credential guessing)")
@pytest.mark.parametrize("surface", SURFACES)
def test_the_limit_then_refused_then_the_window_ends(world, clock, surface):
    attempt = SURFACES[surface]
    for _ in range(LIMIT):
        assert attempt(world, EMAIL, "wrong", HERE) == (signin.INVALID, None)
    assert attempt(world, EMAIL, DEFAULT_PASSWORD, HERE) == (signin.THROTTLED, None)  # the right one too
    clock[0] += WINDOW - 10 - 0.5
    assert attempt(world, EMAIL, DEFAULT_PASSWORD, HERE) == (signin.THROTTLED, None)
    clock[0] += 1  # the next window
    assert attempt(world, EMAIL, DEFAULT_PASSWORD, HERE) == ("ok", world["user"])


@pytest.mark.spec("RFC 6749 §10.10 (credential guessing)")
@pytest.mark.parametrize("surface", SURFACES)
def test_the_count_is_per_account_and_address(world, clock, surface):
    attempt = SURFACES[surface]
    for _ in range(LIMIT):
        attempt(world, EMAIL, "wrong", HERE)
    assert attempt(world, EMAIL, DEFAULT_PASSWORD, HERE) == (signin.THROTTLED, None)
    # Another account from the same address, and the same account from another address: not locked out.
    assert attempt(world, "sam@example.org", DEFAULT_PASSWORD, HERE) == ("ok", world["other"])
    assert attempt(world, EMAIL, DEFAULT_PASSWORD, ELSEWHERE) == ("ok", world["user"])
    # Unknown emails count like known ones (the answer never tells them apart).
    for _ in range(LIMIT):
        assert attempt(world, "nobody@example.org", "wrong", HERE) == (signin.INVALID, None)
    assert attempt(world, "nobody@example.org", "wrong", HERE) == (signin.THROTTLED, None)


def test_the_surfaces_share_one_count(world, clock):
    """One guesser cannot get the limit once per page: the counter is the account's and address's."""
    for attempt in list(SURFACES.values())[:LIMIT]:
        assert attempt(world, EMAIL, "wrong", HERE) == (signin.INVALID, None)
    for attempt in SURFACES.values():
        assert attempt(world, EMAIL, DEFAULT_PASSWORD, HERE) == (signin.THROTTLED, None)


def test_password_reset_requests_are_allowed_again_after_the_window(client, patient, clock, mailoutbox):
    def request() -> int:
        return client.post("/auth/resetpassword", json.dumps({"email": EMAIL}), content_type="application/json",
                           REMOTE_ADDR=HERE).status_code

    assert [request() for _ in range(LIMIT + 1)] == [200] * LIMIT + [429]
    assert len(mailoutbox) == LIMIT
    clock[0] += WINDOW
    assert request() == 200
    assert len(mailoutbox) == LIMIT + 1


@pytest.mark.spec("RFC 6238 §5.2")
def test_second_factor_codes_are_allowed_again_after_the_window(patient, clock):
    user = patient.user
    secret = mfa.start_totp(user).secret
    mfa.confirm_totp(user, pyotp.TOTP(secret).now())
    for _ in range(LIMIT):
        with pytest.raises(mfa.MfaError) as refused:
            mfa.verify_second_factor(user, "000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
        assert not isinstance(refused.value, mfa.Throttled)
    with pytest.raises(mfa.Throttled) as throttled:
        mfa.verify_second_factor(user, "123456")
    assert throttled.value.retry_after == WINDOW - 10
    clock[0] += WINDOW
    codes = mfa.new_recovery_codes(user)
    assert mfa.verify_second_factor(user, codes[0]) == "otp"
