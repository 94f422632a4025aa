"""Password reset and change: ``POST /auth/resetpassword``, ``/auth/setpassword``,
``/auth/changepassword`` (Medplum's shapes) and the "Forgot password?" pages."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext

from medplum_auth import passwords
from medplum_auth.conf import auth_settings
from medplum_auth.models import Login
from medplum_auth.views import auth_api
from tests.factories import DEFAULT_PASSWORD, ClientApplicationFactory, UserFactory
from tests.oauth.conftest import (
    REDIRECT_URI,
    Flow,
    assert_auth_page_headers,
    assert_oauth_error,
    basic_auth,
    obtain_tokens,
    post_form,
    query,
    rid,
)

NEW_PASSWORD = "Lantern-Orchard-Quietly-2026"
ALL_OK = {"resourceType": "OperationOutcome", "id": "allok",
          "issue": [{"severity": "information", "code": "informational", "details": {"text": "All OK"}}]}
LINK = re.compile(r"(https?://\S+/oauth2/setpassword/([^/\s]+)/([^/\s]+))")
BAD_LINK = "Invalid, expired or already used link"


def post_json(http: Any, path: str, body: Any, **extra: Any):
    return http.post(path, json.dumps(body), content_type="application/json", **extra)


def assert_outcome(response, text: str, status: int = 400, code: str = "invalid", expression: str | None = None):
    assert response.status_code == status, (response.status_code, response.content)
    issue = response.json()["issue"][0]
    assert response.json()["resourceType"] == "OperationOutcome"
    assert issue["severity"] == "error" and issue["code"] == code, issue
    assert issue["details"]["text"] == text, issue
    if expression is not None:
        assert issue["expression"] == [expression], issue


def reset_link(email: str = "pat@example.org") -> tuple[str, str, str]:
    """Ask for a reset of ``email``; the emailed link and its id and secret."""
    mail.outbox.clear()
    response = post_json(Client(), "/auth/resetpassword", {"email": email})
    assert response.status_code == 200, response.content
    assert len(mail.outbox) == 1, [m.to for m in mail.outbox]
    url, link_id, secret = LINK.search(mail.outbox[0].body).groups()
    return url, link_id, secret


def refresh(http: Any, app: Any, refresh_token: str):
    return post_form(http, "/oauth2/token", {"grant_type": "refresh_token", "refresh_token": refresh_token,
                                             "client_id": app.client_id})


# --- POST /auth/resetpassword ---------------------------------------------------------------------


def test_reset_emails_a_link_to_the_set_password_page(client, patient):
    response = post_json(client, "/auth/resetpassword", {"email": "Pat@Example.org"})
    assert response.status_code == 200 and response.json() == ALL_OK
    assert response["Cache-Control"] == "no-store"
    [message] = mail.outbox
    assert message.to == ["pat@example.org"] and message.subject == "Reset your password"
    assert message.from_email == "no-reply@localhost"
    url, link_id, secret = LINK.search(message.body).groups()
    assert url.startswith(f"{auth_settings.ISSUER}/oauth2/setpassword/")  # ISSUER, never the Host header
    assert "60 minutes" in message.body
    assert passwords.check_link(link_id, secret) == patient.user


def test_the_link_is_built_from_the_issuer_not_the_host_header(client, patient, settings):
    settings.ALLOWED_HOSTS = ["*"]
    post_json(client, "/auth/resetpassword", {"email": "pat@example.org"}, HTTP_HOST="evil.example")
    assert "evil.example" not in mail.outbox[0].body
    assert f"{auth_settings.ISSUER}/oauth2/setpassword/" in mail.outbox[0].body


def test_unknown_email_gets_the_same_answer_no_email_and_the_same_queries(client, patient):
    with CaptureQueriesContext(connection) as known_queries:
        known = post_json(client, "/auth/resetpassword", {"email": "pat@example.org"})
    with CaptureQueriesContext(connection) as unknown_queries:
        unknown = post_json(client, "/auth/resetpassword", {"email": "nobody@example.org"})
    assert (known.status_code, known.content) == (unknown.status_code, unknown.content)
    assert sorted(k for k, _v in known.items()) == sorted(k for k, _v in unknown.items())
    assert len(mail.outbox) == 1
    # Before the answer: the user lookup alone, for both. After it (HttpResponse.close, which the
    # test client runs inside the capture): the audit trail's event, known or not.
    assert "INSERT" not in known_queries[0]["sql"] and "INSERT" not in unknown_queries[0]["sql"]
    assert [q["sql"].split()[0] for q in unknown_queries] == ["SELECT", "INSERT"]
    assert [q["sql"].split()[0] for q in known_queries] == ["SELECT", "SELECT", "INSERT"]
    from medplum_auth.models import SecurityEvent

    known_event, unknown_event = SecurityEvent.objects.filter(event_type="password_reset.requested").order_by("id")
    assert (known_event.project_id, known_event.actor_user, known_event.outcome) == (
        patient.project_id, str(patient.user_id), 0)
    assert (unknown_event.project_id, unknown_event.actor_user, unknown_event.reason,
            unknown_event.operator_reason) == (None, "", "invalid_credentials", "unknown_email")


def test_the_email_is_sent_after_the_answer(patient):
    """Delivery runs in ``HttpResponse.close()``, which the WSGI server calls after the last byte."""
    request = RequestFactory().post("/auth/resetpassword", json.dumps({"email": "pat@example.org"}),
                                    content_type="application/json")
    response = auth_api.ResetPasswordView.as_view()(request)
    assert response.status_code == 200 and json.loads(response.content) == ALL_OK
    assert mail.outbox == []
    response.close()
    assert len(mail.outbox) == 1
    response.close()  # once only
    assert len(mail.outbox) == 1


def test_a_failing_mail_server_is_logged_not_a_500(client, patient, settings, caplog):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2  # nothing listens
    response = post_json(client, "/auth/resetpassword", {"email": "pat@example.org"})
    assert response.status_code == 200 and response.json() == ALL_OK
    assert any("password reset email failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("user_kwargs", [{"is_active": False}, {"password": None}])
def test_inactive_users_and_users_without_a_password_get_no_email(client, db, user_kwargs):
    user = UserFactory(email="sam@example.org")
    if user_kwargs.get("password", "") is None:
        user.set_unusable_password()
    else:
        user.is_active = False
    user.save()
    response = post_json(client, "/auth/resetpassword", {"email": "sam@example.org"})
    assert response.status_code == 200 and response.json() == ALL_OK
    assert mail.outbox == []


def test_medplum_fields_that_do_not_apply_are_ignored(client, patient, oauth_project):
    response = post_json(client, "/auth/resetpassword", {"email": "pat@example.org", "projectId": str(oauth_project.pk),
                                                         "recaptchaToken": "whatever", "redirectUri": "x"})
    assert response.status_code == 200 and len(mail.outbox) == 1


@pytest.mark.parametrize("body", [{}, {"email": None}, {"email": 42}, {"email": ""}, {"email": "no-at-sign"},
                                  {"email": "a\x00@example.org"}, {"email": "x" * 250 + "@example.org"},
                                  {"email": ["pat@example.org"]}])
def test_reset_bad_input_is_a_400(client, patient, body):
    assert_outcome(post_json(client, "/auth/resetpassword", body), "Valid email address is required",
                   expression="email")
    assert mail.outbox == []


@pytest.mark.parametrize("raw, content_type", [("[1]", "application/json"), ("{", "application/json"),
                                               (b"\xff\xfe", "application/json"), ("email=a@b.c", "text/plain")])
def test_reset_needs_a_json_object(client, raw, content_type):
    response = client.post("/auth/resetpassword", raw, content_type=content_type)
    assert_outcome(response, "Request body must be a JSON object (Content-Type: application/json).")


def test_reset_requests_are_throttled_per_email_known_or_not(client, patient, settings):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "PASSWORD_RESET_MAX_REQUESTS": 2}
    for email in ("pat@example.org", "nobody@example.org"):
        for _ in range(2):
            assert post_json(client, "/auth/resetpassword", {"email": email}).status_code == 200
        response = post_json(client, "/auth/resetpassword", {"email": email.upper()})
        assert_outcome(response, "Too many password reset requests. Try again later.", status=429, code="throttled")
        assert 1 <= int(response["Retry-After"]) <= int(auth_settings.PASSWORD_RESET_WINDOW)
    assert len(mail.outbox) == 2  # no more emails to the flooded mailbox
    assert post_json(client, "/auth/resetpassword", {"email": "third@example.org"}).status_code == 200


def test_reset_requests_are_throttled_per_address(client, db, settings):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "PASSWORD_RESET_IP_MAX_REQUESTS": 3}
    for n in range(3):
        assert post_json(client, "/auth/resetpassword", {"email": f"u{n}@example.org"}).status_code == 200
    assert post_json(client, "/auth/resetpassword", {"email": "u9@example.org"}).status_code == 429
    assert post_json(client, "/auth/resetpassword", {"email": "u9@example.org"},
                     REMOTE_ADDR="192.0.2.7").status_code == 200


# --- POST /auth/setpassword -----------------------------------------------------------------------


def test_set_password_with_the_link_revokes_every_session_and_refresh_token(client, flow, patient, public_client):
    tokens = obtain_tokens(flow, scope="openid offline_access")
    assert "_auth_user_id" in flow.client.session
    _url, link_id, secret = reset_link()
    response = post_json(Client(), "/auth/setpassword", {"id": link_id, "secret": secret, "password": NEW_PASSWORD})
    assert response.status_code == 200 and response.json() == ALL_OK
    patient.user.refresh_from_db()
    assert patient.user.check_password(NEW_PASSWORD)
    assert Login.objects.filter(user=patient.user, revoked_at__isnull=True).count() == 0
    assert set(Login.objects.filter(user=patient.user).values_list("revoked_reason", flat=True)) == {"password_reset"}
    assert_oauth_error(refresh(client, public_client, tokens["refresh_token"]), "invalid_grant")
    assert client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {tokens['access_token']}").status_code == 401
    # The browser session ended too: prompt=none now needs a sign-in.
    assert query(flow.authorize(prompt="none")["Location"])["error"] == "login_required"


def test_a_link_works_once(client, patient):
    _url, link_id, secret = reset_link()
    body = {"id": link_id, "secret": secret, "password": NEW_PASSWORD}
    assert post_json(client, "/auth/setpassword", body).status_code == 200
    assert_outcome(post_json(client, "/auth/setpassword", {**body, "password": "Another-Good-Passphrase-9"}),
                   BAD_LINK, expression="secret")
    patient.user.refresh_from_db()
    assert patient.user.check_password(NEW_PASSWORD)


def test_reset_and_set_password_are_in_the_audit_trail(client, patient, oauth_project):
    from medplum_auth.models import SecurityEvent

    _url, link_id, secret = reset_link()
    assert post_json(client, "/auth/setpassword", {"id": link_id, "secret": secret,
                                                   "password": NEW_PASSWORD}).status_code == 200
    requested = SecurityEvent.objects.get(event_type="password_reset.requested")
    completed = SecurityEvent.objects.get(event_type="password_reset.completed")
    for event in (requested, completed):
        assert (event.project_id, event.subject, event.outcome) == (oauth_project.pk, f"User/{patient.user_id}", 0)
    assert completed.detail == {"reason": "password_reset", "logins_revoked": 0}
    assert NEW_PASSWORD not in str(completed.detail) and secret not in str(requested.detail)


def test_a_new_password_spends_every_earlier_link(client, patient):
    _u, first_id, first_secret = reset_link()
    _u, second_id, second_secret = reset_link()
    assert post_json(client, "/auth/setpassword", {"id": second_id, "secret": second_secret,
                                                   "password": NEW_PASSWORD}).status_code == 200
    assert_outcome(post_json(client, "/auth/setpassword", {"id": first_id, "secret": first_secret,
                                                           "password": NEW_PASSWORD}), BAD_LINK)


def test_a_link_expires_after_password_reset_lifetime(client, patient, monkeypatch):
    _url, link_id, secret = reset_link()
    now = passwords._seconds_now()
    monkeypatch.setattr(passwords, "_seconds_now", lambda: now + 3600)
    assert passwords.check_link(link_id, secret) == patient.user  # still inside the hour
    monkeypatch.setattr(passwords, "_seconds_now", lambda: now + 3602)
    assert_outcome(post_json(client, "/auth/setpassword", {"id": link_id, "secret": secret,
                                                           "password": NEW_PASSWORD}), BAD_LINK)
    patient.user.refresh_from_db()
    assert patient.user.check_password(DEFAULT_PASSWORD)


def test_an_invitation_token_is_not_a_reset_secret(client, patient):
    from django.contrib.auth.tokens import default_token_generator

    _url, link_id, _secret = reset_link()
    invitation = default_token_generator.make_token(patient.user)
    assert_outcome(post_json(client, "/auth/setpassword", {"id": link_id, "secret": invitation,
                                                           "password": NEW_PASSWORD}), BAD_LINK)


@pytest.mark.parametrize("change", [
    {"secret": "abc-def"}, {"secret": "zzzzzz-" + "0" * 32}, {"secret": "-"}, {"secret": "\x00"},
    {"id": "OTk5OTk5OTk"}, {"id": "!!!"}, {"id": "\x00"}, {"id": "A" * 500}, {"id": "ZmFrZQ"}, {"id": "LTE"},
    {"id": "MTAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMA"},  # 10**30: beyond bigint
])
def test_bad_links_are_one_400(client, patient, change):
    _url, link_id, secret = reset_link()
    body = {"id": link_id, "secret": secret, "password": NEW_PASSWORD, **change}
    assert_outcome(post_json(client, "/auth/setpassword", body), BAD_LINK, expression="secret")
    patient.user.refresh_from_db()
    assert patient.user.check_password(DEFAULT_PASSWORD)


@pytest.mark.parametrize("field", ["id", "secret", "password"])
@pytest.mark.parametrize("value", [None, "", 7, ["x"]])
def test_set_password_fields_are_required(client, patient, field, value):
    body = {"id": "MQ", "secret": "s", "password": NEW_PASSWORD, field: value}
    assert_outcome(post_json(client, "/auth/setpassword", body), f"Missing {field}", expression=field)


@pytest.mark.parametrize("password, message", [
    ("short", "This password is too short"), ("password123", "This password is too common"),
    ("83749273649127", "This password is entirely numeric"), ("pat@example.org1", "too similar"),
    ("Good-But-\x00-Nul-Passphrase", "must not contain NUL"),
])
def test_set_password_uses_djangos_validators(client, patient, password, message):
    _url, link_id, secret = reset_link()
    response = post_json(client, "/auth/setpassword", {"id": link_id, "secret": secret, "password": password})
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert message in issue["details"]["text"] and issue["expression"] == ["password"]
    assert post_json(client, "/auth/setpassword", {"id": link_id, "secret": secret,
                                                   "password": NEW_PASSWORD}).status_code == 200  # still usable


# --- POST /auth/changepassword --------------------------------------------------------------------


@pytest.fixture
def signed_in_twice(flow, oauth_project, patient):
    """Two logins of the Patient: one through ``flow`` (the caller) and one through another app."""
    mine = obtain_tokens(flow, scope="openid offline_access")
    other_app = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=REDIRECT_URI)
    other = obtain_tokens(Flow(Client(), other_app), scope="openid offline_access")
    return mine, other, other_app


def change(http: Any, token: str, body: Any):
    return post_json(http, "/auth/changepassword", body, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_change_password_keeps_the_calling_login_and_revokes_the_others(client, signed_in_twice, patient,
                                                                        public_client):
    mine, other, other_app = signed_in_twice
    response = change(client, mine["access_token"], {"oldPassword": DEFAULT_PASSWORD, "newPassword": NEW_PASSWORD})
    assert response.status_code == 200 and response.json() == ALL_OK
    patient.user.refresh_from_db()
    assert patient.user.check_password(NEW_PASSWORD)
    assert client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {mine['access_token']}").status_code == 200
    assert refresh(client, public_client, mine["refresh_token"]).status_code == 200
    assert client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {other['access_token']}").status_code == 401
    assert_oauth_error(refresh(client, other_app, other["refresh_token"]), "invalid_grant")
    assert Login.objects.get(client=other_app).revoked_reason == "password_change"


def test_change_password_with_a_wrong_old_password(client, signed_in_twice, patient, settings):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "SIGNIN_MAX_FAILURES": 2}
    token = signed_in_twice[0]["access_token"]
    for _ in range(2):
        assert_outcome(change(client, token, {"oldPassword": "nope", "newPassword": NEW_PASSWORD}),
                       "Incorrect password", expression="oldPassword")
    response = change(client, token, {"oldPassword": DEFAULT_PASSWORD, "newPassword": NEW_PASSWORD})
    assert_outcome(response, "Too many failed sign-in attempts. Try again later.", status=429, code="throttled")
    assert int(response["Retry-After"]) >= 1
    patient.user.refresh_from_db()
    assert patient.user.check_password(DEFAULT_PASSWORD)
    assert Login.objects.filter(revoked_at__isnull=False).count() == 0


def test_change_password_bad_input(client, signed_in_twice, patient):
    token = signed_in_twice[0]["access_token"]
    assert_outcome(change(client, token, {"newPassword": NEW_PASSWORD}), "Missing oldPassword",
                   expression="oldPassword")
    assert_outcome(change(client, token, {"oldPassword": DEFAULT_PASSWORD, "newPassword": 5}), "Missing newPassword",
                   expression="newPassword")
    response = change(client, token, {"oldPassword": DEFAULT_PASSWORD, "newPassword": "123"})
    assert response.status_code == 400 and response.json()["issue"][0]["expression"] == ["newPassword"]
    assert_outcome(change(client, token, [1]), "Request body must be a JSON object (Content-Type: application/json).")
    patient.user.refresh_from_db()
    assert patient.user.check_password(DEFAULT_PASSWORD)


def test_change_password_needs_a_users_bearer_token(client, confidential_client):
    response = post_json(client, "/auth/changepassword", {"oldPassword": "a", "newPassword": "b"})
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    response = change(client, "not-a-token", {"oldPassword": "a", "newPassword": "b"})
    assert response.status_code == 401
    machine = post_form(client, "/oauth2/token", {"grant_type": "client_credentials"},
                        HTTP_AUTHORIZATION=basic_auth(confidential_client.client_id,
                                                      confidential_client.plaintext_secret)).json()["access_token"]
    assert_outcome(change(client, machine, {"oldPassword": "a", "newPassword": NEW_PASSWORD}),
                   "Forbidden: only a signed-in user can change a password", status=403, code="forbidden")


# --- the pages ------------------------------------------------------------------------------------


def test_sign_in_page_links_to_forgot_password_with_the_request(flow):
    pending = rid(flow.authorize())
    page = flow.client.get(f"/oauth2/signin?rid={pending}")
    assert f'href="/oauth2/resetpassword?rid={pending}"' in page.content.decode()
    assert ">Forgot password?</a>" in page.content.decode()


def test_forgot_password_page_answers_alike_for_known_and_unknown_emails(client, patient):
    page = client.get("/oauth2/resetpassword")
    assert page.status_code == 200 and b'name="email"' in page.content
    assert_auth_page_headers(page)
    known = client.post("/oauth2/resetpassword", {"email": "pat@example.org"})
    unknown = client.post("/oauth2/resetpassword", {"email": "pau@example.org"})
    assert known.status_code == unknown.status_code == 200
    assert known.content.decode().replace("pat@", "pau@") == unknown.content.decode()
    assert b"Check your email" in known.content
    assert_auth_page_headers(known)
    assert [m.to for m in mail.outbox] == [["pat@example.org"]]


def test_forgot_password_page_bad_input_and_throttling(client, patient, settings):
    assert client.post("/oauth2/resetpassword", {"email": "not an email"}).status_code == 400
    assert client.post("/oauth2/resetpassword", {"email": "a\x00@example.org"}).status_code == 400
    assert client.post("/oauth2/resetpassword", {}).status_code == 400
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "PASSWORD_RESET_MAX_REQUESTS": 1}
    assert client.post("/oauth2/resetpassword", {"email": "pat@example.org"}).status_code == 200
    throttled = client.post("/oauth2/resetpassword", {"email": "pat@example.org"})
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) >= 1
    assert b"Too many password reset requests" in throttled.content
    assert len(mail.outbox) == 1


def test_forgot_password_needs_csrf(patient):
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/oauth2/resetpassword", {"email": "pat@example.org"}).status_code == 403
    assert mail.outbox == []


def test_set_password_page_then_continue_signing_in(flow, patient):
    pending = rid(flow.authorize())
    flow.client.post("/oauth2/resetpassword", {"email": "pat@example.org", "rid": pending})
    url, _id, _secret = LINK.search(mail.outbox[0].body).groups()
    path = url.removeprefix(auth_settings.ISSUER)
    moved = flow.client.get(path)  # Django moves the secret into the session
    assert moved.status_code == 302 and moved["Location"].endswith("/set-password")
    form = flow.client.get(moved["Location"])
    assert form.status_code == 200 and b"Choose a new password" in form.content
    assert_auth_page_headers(form)
    mismatch = flow.client.post(moved["Location"], {"new_password1": NEW_PASSWORD, "new_password2": "other"})
    assert mismatch.status_code == 200 and b"didn" in mismatch.content  # "The two password fields didn't match."
    done = flow.client.post(moved["Location"], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == "/oauth2/setpassword/done"
    page = flow.client.get(done["Location"])
    assert f'href="/oauth2/signin?rid={pending}"' in page.content.decode()
    signed_in = flow.client.post("/oauth2/signin", {"rid": pending, "email": "pat@example.org",
                                                    "password": NEW_PASSWORD})
    assert signed_in.status_code == 302
    assert query(flow.follow(signed_in)["Location"])["code"]
    again = flow.client.get(path)  # the link is spent
    assert again.status_code == 200 and b"This link no longer works" in again.content
    patient.user.refresh_from_db()
    assert Login.objects.filter(user=patient.user).exclude(revoked_reason="").count() == 0  # nothing to revoke


@pytest.mark.parametrize("path", ["/oauth2/setpassword/MQ/abc-def", "/oauth2/setpassword/%00/x-y",
                                  "/oauth2/setpassword/" + "A" * 300 + "/x", "/oauth2/setpassword/!!/set-password"])
def test_bad_set_password_links_are_a_page_not_a_500(client, patient, path):
    response = client.get(path)
    assert response.status_code == 200 and b"This link no longer works" in response.content
