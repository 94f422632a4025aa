"""Second factors: TOTP enrollment and verification over Medplum's ``/auth/mfa/*`` JSON API and
on the HTML sign-in, recovery codes, replay and throttling, MFA-required projects, ``amr``."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pyotp
import pytest
from django.utils import timezone

from medplum_auth import mfa
from medplum_auth.keys import decrypt_secret
from medplum_auth.models import Login, RecoveryCode, SecurityEvent, TotpDevice
from tests.oauth.conftest import REDIRECT_URI, Flow, id_token_claims, pkce_pair, query
from tests.oauth.test_auth_api import assert_outcome, login_body, post_json, redeem

pytestmark = [pytest.mark.django_db, pytest.mark.spec("issue: MFA (TOTP, recovery codes)")]


def secret_of(user: Any) -> str:
    return decrypt_secret(TotpDevice.objects.get(user=user).secret, mfa.SECRET_PURPOSE)


def code(user: Any, offset: int = 0) -> str:
    return pyotp.TOTP(secret_of(user)).at(timezone.now(), counter_offset=offset)


@pytest.fixture
def pkce() -> tuple[str, str]:
    return pkce_pair()


@pytest.fixture
def enrolled(patient) -> list[str]:
    """The patient has an authenticator app; their recovery codes."""
    mfa.start_totp(patient.user)
    return mfa.confirm_totp(patient.user, code(patient.user))


def events(event_type: str) -> list[SecurityEvent]:
    return list(SecurityEvent.objects.filter(event_type=event_type).order_by("id"))


# --- the module ----------------------------------------------------------------------------------

def test_enrollment_secret_is_encrypted_and_stable_until_confirmed(patient):
    first = mfa.start_totp(patient.user)
    again = mfa.start_totp(patient.user)
    assert first.secret == again.secret and len(first.secret) >= 32
    stored = TotpDevice.objects.get(user=patient.user)
    assert first.secret not in stored.secret and stored.confirmed_at is None
    assert first.uri.startswith("otpauth://totp/Medplum%20Auth:pat%40example.org?secret=")
    assert first.qr_code.startswith("data:image/png;base64,")
    assert base64.b64decode(first.qr_code.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert mfa.factors(patient.user) == set()


def test_confirming_makes_recovery_codes_stored_as_digests(patient):
    mfa.start_totp(patient.user)
    codes = mfa.confirm_totp(patient.user, code(patient.user))
    assert len(codes) == 10 and len(set(codes)) == 10
    stored = set(RecoveryCode.objects.filter(user=patient.user).values_list("digest", flat=True))
    assert not stored & set(codes) and len(stored) == 10
    assert mfa.factors(patient.user) == {"otp"}
    with pytest.raises(mfa.MfaError, match="Already enrolled"):
        mfa.start_totp(patient.user)


def test_a_code_is_accepted_once(patient, enrolled):
    current = code(patient.user, 1)  # the next step: not used by the enrollment
    assert mfa.verify_second_factor(patient.user, current) == "otp"
    with pytest.raises(mfa.MfaError, match="Invalid token"):
        mfa.verify_second_factor(patient.user, current)  # replayed within its window
    with pytest.raises(mfa.MfaError):
        mfa.verify_second_factor(patient.user, code(patient.user, 0))  # an earlier step than the last used


@pytest.mark.parametrize("token", ["", "12345", "1234567", "abcdef", None, 123456, ["123456"], "000000"])
def test_malformed_or_wrong_codes_are_refused(patient, enrolled, token):
    with pytest.raises(mfa.MfaError, match="Invalid token"):
        mfa.verify_second_factor(patient.user, token)


def test_recovery_codes_work_once(patient, enrolled):
    assert mfa.verify_second_factor(patient.user, enrolled[0].upper()) == "otp"
    with pytest.raises(mfa.MfaError):
        mfa.verify_second_factor(patient.user, enrolled[0])
    assert mfa.remaining_recovery_codes(patient.user) == 9


def test_wrong_codes_are_throttled_per_user(patient, enrolled, settings):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "MFA_MAX_FAILURES": 3}
    for _ in range(3):
        with pytest.raises(mfa.MfaError, match="Invalid token"):
            mfa.verify_second_factor(patient.user, "000000")
    with pytest.raises(mfa.Throttled) as throttled:
        mfa.verify_second_factor(patient.user, code(patient.user, 1))  # even the right code, now
    assert 1 <= throttled.value.retry_after <= 900


def test_amr_values():
    assert mfa.amr("pwd") == "pwd"
    assert mfa.amr("pwd", "otp") == "pwd otp mfa"
    assert mfa.amr("pwd", "hwk") == "pwd hwk mfa"


# --- JSON API ---------------------------------------------------------------------------------------

def test_login_of_an_enrolled_user_asks_for_the_code(client, public_client, patient, enrolled, pkce):
    response = post_json(client, "/auth/login", login_body(public_client, pkce[1]))
    assert response.status_code == 200
    body = response.json()
    assert body == {"login": body["login"], "mfaRequired": True, "mfaMethods": ["totp"]}
    login = Login.objects.get(pk=body["login"])
    assert login.awaiting_mfa and login.code_digest is None
    assert "_auth_user_id" not in client.session  # no browser session before the second factor
    # The login cannot be finished through /auth/profile either.
    assert_outcome(post_json(client, "/auth/profile", {"login": body["login"], "profile": str(patient.pk)}),
                   "Invalid login")

    assert_outcome(post_json(client, "/auth/mfa/verify", {"login": body["login"], "token": "000000"}),
                   "Invalid token")
    verified = post_json(client, "/auth/mfa/verify", {"login": body["login"], "token": code(patient.user, 1)})
    assert verified.status_code == 200, verified.content
    assert set(verified.json()) == {"login", "code"}
    assert client.session["_auth_user_id"] == str(patient.user.pk)
    tokens = redeem(client, public_client, verified.json()["code"], pkce[0]).json()
    assert id_token_claims(tokens["id_token"])["amr"] == ["pwd", "otp", "mfa"]
    assert Login.objects.get(pk=body["login"]).amr == "pwd otp mfa"
    # The same login cannot be verified twice.
    assert_outcome(post_json(client, "/auth/mfa/verify", {"login": body["login"], "token": code(patient.user, 1)}),
                   "Invalid login")
    assert [e.outcome for e in events("mfa.failed")] == [4]
    assert len(events("mfa.verified")) == 1


def test_login_without_mfa_has_pwd_amr(client, public_client, patient, pkce):
    body = post_json(client, "/auth/login", login_body(public_client, pkce[1])).json()
    tokens = redeem(client, public_client, body["code"], pkce[0]).json()
    assert id_token_claims(tokens["id_token"])["amr"] == ["pwd"]


@pytest.mark.parametrize(("data", "text"), [
    ({}, "Missing login"), ({"login": "x"}, "Missing token"), ({"login": "not-a-uuid", "token": "1"}, "Invalid login"),
    ({"login": "00000000-0000-0000-0000-000000000000", "token": "123456"}, "Invalid login"),
])
def test_verify_bad_input(client, data, text):
    assert_outcome(post_json(client, "/auth/mfa/verify", data), text)


def test_an_old_pending_login_cannot_be_verified(client, public_client, patient, enrolled, pkce):
    body = post_json(client, "/auth/login", login_body(public_client, pkce[1])).json()
    Login.objects.filter(pk=body["login"]).update(created=timezone.now() - timedelta(hours=1))
    assert_outcome(post_json(client, "/auth/mfa/verify", {"login": body["login"], "token": code(patient.user, 1)}),
                   "Invalid login")


def test_verify_is_throttled_with_429(client, public_client, patient, enrolled, pkce, settings):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "MFA_MAX_FAILURES": 2}
    body = post_json(client, "/auth/login", login_body(public_client, pkce[1])).json()
    for _ in range(2):
        assert post_json(client, "/auth/mfa/verify", {"login": body["login"], "token": "000000"}).status_code == 400
    throttled = post_json(client, "/auth/mfa/verify", {"login": body["login"], "token": code(patient.user, 1)})
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) >= 1
    assert throttled.json()["issue"][0]["code"] == "throttled"


def test_mfa_required_project_makes_members_enroll_at_login(client, public_client, patient, oauth_project, pkce):
    oauth_project.mfa_required = True
    oauth_project.save()
    body = post_json(client, "/auth/login", login_body(public_client, pkce[1])).json()
    assert body["mfaEnrollRequired"] is True and body["allowedMfaMethods"] == ["totp"]
    assert body["enrollUri"].startswith("otpauth://totp/") and body["enrollQrCode"].startswith("data:image/png")
    assert_outcome(post_json(client, "/auth/mfa/verify", {"login": body["login"], "token": "123456"}),
                   "Invalid token")  # nothing enrolled yet: no code can verify
    secret = body["enrollUri"].split("secret=")[1].split("&")[0]
    enrolled = post_json(client, "/auth/mfa/login-enroll",
                         {"login": body["login"], "token": pyotp.TOTP(secret).now()})
    assert enrolled.status_code == 200, enrolled.content
    result = enrolled.json()
    assert set(result) == {"login", "code", "recoveryCodes"} and len(result["recoveryCodes"]) == 10
    assert mfa.factors(patient.user) == {"otp"}
    tokens = redeem(client, public_client, result["code"], pkce[0]).json()
    assert id_token_claims(tokens["id_token"])["amr"] == ["pwd", "otp", "mfa"]
    assert len(events("mfa.enrolled")) == 1


def test_account_enrollment_with_a_bearer_token(client, public_client, patient, pkce):
    body = post_json(client, "/auth/login", login_body(public_client, pkce[1])).json()
    token = redeem(client, public_client, body["code"], pkce[0]).json()["access_token"]
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    status = client.get("/auth/mfa/status", **bearer).json()
    assert status["enrolled"] is False and status["enrollUri"].startswith("otpauth://")
    assert_outcome(post_json(client, "/auth/mfa/enroll", {"token": "000000"}, **bearer), "Invalid token")
    enrolled = post_json(client, "/auth/mfa/enroll", {"token": code(patient.user)}, **bearer)
    assert enrolled.status_code == 200 and enrolled.json()["issue"][0]["code"] == "informational"
    assert len(enrolled.json()["recoveryCodes"]) == 10
    assert client.get("/auth/mfa/status", **bearer).json() == {"enrolled": True, "methods": ["otp"],
                                                               "recoveryCodesLeft": 10}
    assert_outcome(post_json(client, "/auth/mfa/enroll", {"token": code(patient.user, 1)}, **bearer),
                   "Already enrolled")
    assert_outcome(post_json(client, "/auth/mfa/disable", {"token": "000000"}, **bearer), "Invalid token")
    disabled = post_json(client, "/auth/mfa/disable", {"token": code(patient.user, 1)}, **bearer)
    assert disabled.status_code == 200
    assert mfa.factors(patient.user) == set() and not RecoveryCode.objects.filter(user=patient.user).exists()
    assert len(events("mfa.disabled")) == 1


def test_account_endpoints_need_a_users_token(client, public_client):
    assert client.get("/auth/mfa/status").status_code == 401
    assert post_json(client, "/auth/mfa/enroll", {"token": "1"}).status_code == 401
    assert post_json(client, "/auth/mfa/disable", {"token": "1"}).status_code == 401


# --- HTML sign-in ---------------------------------------------------------------------------------

def to_mfa_page(flow: Flow, **overrides: str):
    response = flow.sign_in(flow.authorize(**overrides))
    assert response.status_code == 302 and response["Location"] == "/oauth2/mfa", response
    return response


def rid_of(flow: Flow) -> str:
    """The pending authorization request of the flow's session."""
    from medplum_auth.authorization import SESSION_KEY

    (rid,) = flow.client.session[SESSION_KEY]
    return rid


def test_html_sign_in_asks_for_the_code(flow, patient, enrolled):
    response = to_mfa_page(flow)
    assert "_auth_user_id" not in flow.client.session  # signed in only after the second step
    page = flow.client.get(response["Location"])
    assert page.status_code == 200 and b"Code from your authenticator app" in page.content
    assert page["X-Frame-Options"] == "DENY"
    wrong = flow.client.post("/oauth2/mfa", {"code": "000000"})
    assert wrong.status_code == 400 and b"That code is not valid" in wrong.content
    done = flow.client.post("/oauth2/mfa", {"code": code(patient.user, 1)})
    assert done.status_code == 302
    response = flow.follow(done)
    assert response["Location"].startswith(REDIRECT_URI)
    tokens = flow.token(query(response["Location"])["code"]).json()
    assert id_token_claims(tokens["id_token"])["amr"] == ["pwd", "otp", "mfa"]


def test_html_sign_in_with_a_recovery_code(flow, patient, enrolled):
    to_mfa_page(flow)
    done = flow.client.post("/oauth2/mfa", {"code": enrolled[3]})
    assert flow.follow(done)["Location"].startswith(REDIRECT_URI)
    assert mfa.remaining_recovery_codes(patient.user) == 9


def test_the_resume_step_does_not_skip_the_second_factor(flow, patient, enrolled):
    to_mfa_page(flow)
    response = flow.client.get(f"/oauth2/authorize/resume?rid={rid_of(flow)}")
    assert response["Location"].startswith("/oauth2/signin?rid=")  # still nobody signed in


def test_html_enrollment_for_an_mfa_required_project(flow, patient, oauth_project):
    oauth_project.mfa_required = True
    oauth_project.save()
    response = to_mfa_page(flow)
    page = flow.client.get(response["Location"])
    assert b"Set up two-step sign-in" in page.content and b"data:image/png;base64," in page.content
    done = flow.client.post("/oauth2/mfa", {"code": code(patient.user)})
    assert done.status_code == 200 and b"recovery codes" in done.content
    assert len(done.context["codes"]) == 10
    response = flow.follow(flow.client.get(done.context["next"]))
    assert response["Location"].startswith(REDIRECT_URI)


def test_a_previous_users_session_does_not_carry_on(client, public_client, patient, enrolled):
    from tests.factories import MembershipFactory, UserFactory

    other = UserFactory(email="sam@example.org", username="sam@example.org")
    MembershipFactory(project=patient.project, user=other, profile_type="Patient")
    client.force_login(other)
    flow = Flow(client, public_client)
    to_mfa_page(flow, prompt="login")
    assert "_auth_user_id" not in client.session  # Sam was signed out when Pat's second step began
    assert client.get(f"/oauth2/authorize/resume?rid={rid_of(flow)}")["Location"].startswith("/oauth2/signin")


# --- the security page ------------------------------------------------------------------------------

@pytest.fixture
def signed_in(client, patient):
    client.force_login(patient.user)
    return client


def test_security_page_needs_a_signed_in_user(client):
    response = client.get("/oauth2/account/security")
    assert response["Location"] == "/oauth2/account/signin?next=/oauth2/account/security"


def test_security_page_turns_the_authenticator_app_on_and_off(signed_in, patient):
    page = signed_in.get("/oauth2/account/security")
    assert page.status_code == 200 and page["X-Frame-Options"] == "DENY"
    secret = page.context["enrollment"].secret
    wrong = signed_in.post("/oauth2/account/security", {"action": "totp-enroll", "code": "000000"})
    assert wrong.status_code == 400 and b"That code is not valid" in wrong.content
    on = signed_in.post("/oauth2/account/security", {"action": "totp-enroll", "code": pyotp.TOTP(secret).now()})
    assert on.status_code == 200 and len(on.context["codes"]) == 10
    assert mfa.factors(patient.user) == {"otp"}
    again = signed_in.post("/oauth2/account/security", {"action": "recovery-codes"})
    assert again.context["codes"] and set(again.context["codes"]).isdisjoint(on.context["codes"])
    off = signed_in.post("/oauth2/account/security", {"action": "totp-disable", "code": code(patient.user, 1)})
    assert off.status_code == 200 and mfa.factors(patient.user) == set()
    assert [e.detail["method"] for e in events("mfa.enrolled")] == ["totp"]
    assert [e.detail["method"] for e in events("mfa.disabled")] == ["totp"]


def test_security_page_needs_csrf(client, patient):
    from django.test import Client

    http = Client(enforce_csrf_checks=True)
    http.force_login(patient.user)
    assert http.post("/oauth2/account/security", {"action": "recovery-codes"}).status_code == 403


def test_security_page_removes_only_the_users_own_key(signed_in, patient, db):
    from medplum_auth.models import WebAuthnCredential
    from tests.factories import UserFactory

    mine = WebAuthnCredential.objects.create(user=patient.user, credential_id="mine", public_key="x", name="Mine")
    theirs = WebAuthnCredential.objects.create(user=UserFactory(), credential_id="theirs", public_key="x")
    assert signed_in.post("/oauth2/account/security", {"action": "key-remove", "key": theirs.pk}).status_code == 400
    assert WebAuthnCredential.objects.filter(pk=theirs.pk).exists()
    assert signed_in.post("/oauth2/account/security", {"action": "key-remove", "key": mine.pk}).status_code == 200
    assert not WebAuthnCredential.objects.filter(pk=mine.pk).exists()


@pytest.mark.parametrize("credential", ["", "not json", "{}", '{"id": 5}', '{"id": "unknown", "response": {}}'])
def test_bad_security_key_answers_are_refused_not_500(client, patient, credential):
    from medplum_auth import passkeys
    from medplum_auth.models import WebAuthnCredential

    WebAuthnCredential.objects.create(user=patient.user, credential_id="known", public_key="AAAA")
    with pytest.raises(mfa.MfaError):
        passkeys.authenticate(patient.user, credential, "Y2hhbGxlbmdl")
    with pytest.raises(mfa.MfaError):
        passkeys.register(patient.user, credential, "Y2hhbGxlbmdl")


def test_webauthn_step_without_a_pending_sign_in(client):
    assert client.get("/oauth2/mfa/webauthn").status_code == 400
    assert client.post("/oauth2/mfa/webauthn", {"credential": "{}"}).status_code == 400  # expired page
    assert client.get("/oauth2/mfa").status_code == 400


def test_webauthn_registration_options(signed_in, patient, settings):
    import json as jsonlib

    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "ISSUER": "https://id.example.org"}
    options = jsonlib.loads(signed_in.get("/oauth2/account/webauthn").content)
    assert options["rp"] == {"id": "id.example.org", "name": "Medplum Auth"}
    assert options["user"]["name"] == "pat@example.org" and options["challenge"]
    assert signed_in.session["medplum_auth_webauthn_registration"] == options["challenge"]


# --- acr_values (OIDC Core §3.1.2.1) -----------------------------------------------------------------

@pytest.mark.spec("OIDC Core §3.1.2.1 acr_values, §2 acr")
def test_acr_values_mfa_steps_up_a_password_session(flow, patient):
    response = flow.follow(flow.sign_in(flow.authorize()))
    first = flow.token(query(response["Location"])["code"]).json()
    assert id_token_claims(first["id_token"])["acr"] == "pwd"
    # The same session, asked for mfa: the sign-in (and then the second factor) comes back.
    flow.verifier, flow.challenge = pkce_pair()
    again = flow.authorize(acr_values="mfa")
    assert again["Location"].startswith("/oauth2/signin?rid=")
    to_mfa = flow.sign_in(again)
    assert to_mfa["Location"] == "/oauth2/mfa"
    assert b"Set up two-step sign-in" in flow.client.get("/oauth2/mfa").content  # none enrolled: enroll now
    done = flow.client.post("/oauth2/mfa", {"code": code(patient.user)})
    response = flow.follow(flow.client.get(done.context["next"]))
    tokens = flow.token(query(response["Location"])["code"]).json()
    claims = id_token_claims(tokens["id_token"])
    assert (claims["acr"], claims["amr"]) == ("mfa", ["pwd", "otp", "mfa"])
    # An mfa session satisfies acr_values=mfa without asking again; prompt=none works.
    flow.verifier, flow.challenge = pkce_pair()
    silent = flow.authorize(acr_values="mfa", prompt="none")
    assert silent["Location"].startswith(REDIRECT_URI) and "code=" in silent["Location"]


def test_acr_values_mfa_with_prompt_none_and_a_password_session(flow, patient):
    flow.follow(flow.sign_in(flow.authorize()))
    silent = flow.authorize(acr_values="mfa", prompt="none")
    assert silent["Location"].startswith(REDIRECT_URI) and query(silent["Location"])["error"] == "login_required"
