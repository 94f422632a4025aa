"""The server-rendered pages of the code flow: sign-in, profile chooser and consent.

Sign-in: CSRF, one message for every failure, throttling, session fixation. Profile: only the
user's active memberships in the client's project. Consent: granted ⊆ requested, ``openid``
always kept, decisions stored as :class:`Consent`. Every page: no framing, no referrer, no caching.
"""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from medplum_auth import authorization, signin
from medplum_auth.conf import auth_settings
from medplum_auth.models import Consent, Login
from tests.factories import DEFAULT_PASSWORD, ClientApplicationFactory, MembershipFactory, ProjectFactory, UserFactory
from tests.oauth.conftest import (
    REDIRECT_URI,
    Flow,
    access_token_claims,
    assert_auth_page_headers,
    id_token_claims,
    query,
    rid,
)

INVALID = "Email or password is invalid"



@pytest.fixture
def practitioner(patient, oauth_project):
    return MembershipFactory(project=oauth_project, user=patient.user, profile_type="Practitioner",
                             profile_display="Dr Lee")


@pytest.fixture
def csrf_flow(public_client, patient):
    return Flow(Client(enforce_csrf_checks=True), public_client)


def sign_in_post(flow: Flow, pending: str, email: str = "pat@example.org", password: str = DEFAULT_PASSWORD,
                 **extra: str):
    return flow.client.post("/oauth2/signin", {"rid": pending, "email": email, "password": password, **extra})


def to_profile_page(flow: Flow, **overrides: str):
    """Sign in and resume until the profile chooser is asked for; return that redirect."""
    response = flow.client.get(flow.sign_in(flow.authorize(**overrides))["Location"])
    assert response["Location"].startswith("/oauth2/profile?rid="), response["Location"]
    return response


def to_consent_page(flow: Flow, **overrides: str):
    """Sign in and resume until the consent page is asked for; return that redirect."""
    response = flow.client.get(flow.sign_in(flow.authorize(**overrides))["Location"])
    assert response["Location"].startswith("/oauth2/consent?rid="), response["Location"]
    return response


def finish(flow: Flow, response) -> dict:
    """Follow to the client and redeem the code: the token response."""
    response = flow.follow(response, approve=False)
    assert response["Location"].startswith(REDIRECT_URI + "?"), response["Location"]
    token = flow.token(query(response["Location"])["code"])
    assert token.status_code == 200, token.content
    return token.json()


# --- sign-in ---------------------------------------------------------------------------------------


@pytest.mark.spec("Medplum ClientApplication.signInForm (client name, welcome text)")
def test_sign_in_page_names_the_client(flow, public_client):
    public_client.sign_in_text = "Welcome to the Clinic portal."
    public_client.save()
    response = flow.client.get(flow.authorize()["Location"])
    html = response.content.decode()
    assert response.status_code == 200
    assert "<title>Sign in to Public app</title>" in html
    assert "to continue to <strong>Public app</strong>" in html
    assert '<p class="welcome">Welcome to the Clinic portal.</p>' in html
    assert f'name="rid" value="{response.context["rid"]}"' in html


@pytest.mark.spec("OWASP ASVS V5.3 (output encoding)")
def test_sign_in_text_is_escaped(flow, public_client):
    public_client.sign_in_text = "<img src=x onerror=alert(1)>"
    public_client.save()
    html = flow.client.get(flow.authorize()["Location"]).content.decode()
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


@pytest.mark.spec("RFC 6749 §10.12")
def test_sign_in_post_without_csrf_token_is_forbidden(csrf_flow):
    pending = rid(csrf_flow.authorize())
    csrf_flow.client.get(f"/oauth2/signin?rid={pending}")  # sets the CSRF cookie
    response = sign_in_post(csrf_flow, pending)
    assert response.status_code == 403
    assert "_auth_user_id" not in csrf_flow.client.session
    assert not Login.objects.exists()


@pytest.mark.spec("RFC 6749 §10.12")
def test_sign_in_post_with_a_foreign_csrf_token_is_forbidden(csrf_flow, public_client):
    pending = rid(csrf_flow.authorize())
    csrf_flow.client.get(f"/oauth2/signin?rid={pending}")
    attacker = Client(enforce_csrf_checks=True)
    attacker_pending = rid(Flow(attacker, public_client).authorize())
    token = attacker.get(f"/oauth2/signin?rid={attacker_pending}").context["csrf_token"]
    response = sign_in_post(csrf_flow, pending, csrfmiddlewaretoken=token)
    assert response.status_code == 403


@pytest.mark.spec("RFC 6749 §10.12")
def test_sign_in_post_with_csrf_token_works(csrf_flow):
    pending = rid(csrf_flow.authorize())
    token = csrf_flow.client.get(f"/oauth2/signin?rid={pending}").context["csrf_token"]
    response = sign_in_post(csrf_flow, pending, csrfmiddlewaretoken=token)
    assert response.status_code == 302
    assert response["Location"] == f"/oauth2/authorize/resume?rid={pending}"
    assert query(csrf_flow.follow(response)["Location"])["code"]


@pytest.mark.spec("OWASP ASVS V2.2 (no account enumeration)")
@pytest.mark.parametrize(("email", "password"), [
    ("pat@example.org", "wrong password"),
    ("nobody@example.org", DEFAULT_PASSWORD),
    ("nobody@example.org", "wrong password"),
    ("", ""),
    ("pat@example.org", ""),
])
def test_failed_sign_in_says_the_same_thing(flow, email, password):
    pending = rid(flow.authorize())
    response = sign_in_post(flow, pending, email=email, password=password)
    assert response.status_code == 400
    assert response.context["error"] == INVALID
    assert f'<p class="error" role="alert">{INVALID}</p>' in response.content.decode()
    assert f'value="{email}"' in response.content.decode()  # the email is kept, the password is not
    assert password == "" or password not in response.content.decode()
    assert "_auth_user_id" not in flow.client.session
    assert_auth_page_headers(response)


@pytest.mark.spec("OWASP ASVS V2.2 (no account enumeration)")
def test_failed_sign_in_pages_are_identical_for_unknown_email_and_wrong_password(flow, patient):
    other = UserFactory(email="sam@example.org")
    pending = rid(flow.authorize())
    wrong = sign_in_post(flow, pending, email=patient.user.email, password="nope").content.decode()
    unknown = sign_in_post(flow, pending, email="nobody@example.org", password="nope").content.decode()
    inactive_user = other
    inactive_user.is_active = False
    inactive_user.save()
    inactive = sign_in_post(flow, pending, email="sam@example.org").content.decode()

    def normalized(html: str, email: str) -> str:
        return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", html).replace(email, "E")

    # Identical apart from the echoed email address (and the per-render CSRF mask).
    assert normalized(wrong, patient.user.email) == normalized(unknown, "nobody@example.org") \
        == normalized(inactive, "sam@example.org")
    assert INVALID in wrong


@pytest.mark.spec("RFC 5321 §2.4 (email domain case)")
def test_email_is_case_insensitive(flow):
    response = sign_in_post(flow, rid(flow.authorize()), email="  PAT@Example.ORG ")
    assert response.status_code == 302


@pytest.mark.spec("OIDC Core §3.1.2.3")
def test_inactive_user_is_refused(flow, patient):
    patient.user.is_active = False
    patient.user.save()
    response = sign_in_post(flow, rid(flow.authorize()))
    assert response.status_code == 400
    assert response.context["error"] == INVALID
    assert "_auth_user_id" not in flow.client.session


@pytest.mark.spec("RFC 6749 §10.10 (credential guessing)")
@override_settings(MEDPLUM_AUTH={**settings.MEDPLUM_AUTH, "SIGNIN_MAX_FAILURES": 3})
def test_sign_in_is_throttled_after_repeated_failures(flow, public_client):
    pending = rid(flow.authorize())
    for _ in range(3):
        assert sign_in_post(flow, pending, password="wrong").context["error"] == INVALID
    response = sign_in_post(flow, pending)  # the right password no longer helps
    assert response.status_code == 400
    assert response.context["error"] == signin.THROTTLED
    assert "_auth_user_id" not in flow.client.session
    # Another account from the same address is not locked out by these failures.
    sam = UserFactory(email="sam@example.org")
    assert sign_in_post(flow, pending, email="sam@example.org").status_code == 302
    assert flow.client.session["_auth_user_id"] == str(sam.pk)


@pytest.mark.spec("RFC 6749 §10.10 (credential guessing)")
@override_settings(MEDPLUM_AUTH={**settings.MEDPLUM_AUTH, "SIGNIN_MAX_FAILURES": 3})
def test_throttling_counts_unknown_emails_too(flow):
    pending = rid(flow.authorize())
    for _ in range(3):
        sign_in_post(flow, pending, email="nobody@example.org")
    assert sign_in_post(flow, pending, email="nobody@example.org").context["error"] == signin.THROTTLED


@pytest.mark.spec("RFC 6749 §10.10 (credential guessing)")
@override_settings(MEDPLUM_AUTH={**settings.MEDPLUM_AUTH, "SIGNIN_MAX_FAILURES": 3})
def test_successful_sign_in_resets_the_failure_count(flow):
    pending = rid(flow.authorize())
    for _ in range(2):
        sign_in_post(flow, pending, password="wrong")
    assert sign_in_post(flow, pending).status_code == 302
    assert flow.client.session["_auth_user_id"] == str(get_user_model().objects.get(email="pat@example.org").pk)
    for _ in range(2):
        assert sign_in_post(flow, pending, password="wrong").context["error"] == INVALID


@pytest.mark.spec("OWASP session fixation")
def test_session_key_changes_on_sign_in(flow):
    pending = rid(flow.authorize())
    before = flow.client.cookies[settings.SESSION_COOKIE_NAME].value
    response = sign_in_post(flow, pending)
    after = flow.client.cookies[settings.SESSION_COOKIE_NAME].value
    assert response.status_code == 302
    assert before != after
    # The pending request moved to the new session; the old session key is worthless.
    assert pending in flow.client.session[authorization.SESSION_KEY]
    stale = Client()
    stale.cookies[settings.SESSION_COOKIE_NAME] = before
    assert "_auth_user_id" not in stale.session
    assert stale.get(f"/oauth2/authorize/resume?rid={pending}").status_code == 400


@pytest.mark.spec("OIDC Core §3.1.2.1 id_token_hint")
def test_signing_in_as_another_user_keeps_the_request_but_not_the_previous_choices(flow, practitioner,
                                                                                   oauth_project, public_client):
    sam = MembershipFactory(project=oauth_project, user=UserFactory(email="sam@example.org"))
    response = to_profile_page(flow, scope="openid profile", prompt="login")
    pending = rid(response)
    flow.client.post("/oauth2/profile", {"rid": pending, "membership": str(practitioner.pk)})
    # Before completing, someone else signs in on this browser with the same request.
    assert flow.client.get(f"/oauth2/signin?rid={pending}").status_code == 200
    response = sign_in_post(flow, pending, email="sam@example.org")
    assert response.status_code == 302
    response = flow.client.get(response["Location"])
    assert response["Location"].startswith("/oauth2/consent?rid=")  # Sam consents himself
    response = flow.client.post("/oauth2/consent", {"rid": pending, "action": "allow", "scope": ["profile"]})
    body = finish(flow, response)
    assert body["profile"]["reference"] == sam.profile
    assert Login.objects.get(user=sam.user).membership == sam


@pytest.mark.spec("OIDC Core §3.1.2.1 prompt=login")
def test_sign_in_page_of_a_signed_in_user_still_asks_for_the_password(flow):
    flow.redirect()
    response = flow.authorize(prompt="login")
    page = flow.client.get(response["Location"])
    assert page.status_code == 200
    assert 'type="password"' in page.content.decode()


@pytest.mark.spec("RFC 6749 §10.12")
def test_get_sign_in_page_never_signs_in(flow):
    pending = rid(flow.authorize())
    flow.client.get(f"/oauth2/signin?rid={pending}&email=pat@example.org&password={DEFAULT_PASSWORD}")
    assert "_auth_user_id" not in flow.client.session


# --- security headers on every page -----------------------------------------------------------------


def _pages(flow: Flow, practitioner) -> dict[str, object]:
    pages: dict[str, object] = {}
    pages["authorize_error"] = flow.authorize(client_id="nope")
    pages["authorize_redirect"] = flow.authorize()
    pages["authorize_post"] = flow.post_authorize()
    pages["expired"] = flow.client.get("/oauth2/signin?rid=nope")
    pending = rid(flow.authorize(scope="openid profile"))
    pages["signin"] = flow.client.get(f"/oauth2/signin?rid={pending}")
    pages["signin_failed"] = sign_in_post(flow, pending, password="wrong")
    pages["signin_ok"] = sign_in_post(flow, pending)
    pages["resume"] = flow.client.get(pages["signin_ok"]["Location"])
    pages["profile"] = flow.client.get(f"/oauth2/profile?rid={pending}")
    pages["profile_bad"] = flow.client.post("/oauth2/profile", {"rid": pending, "membership": "nope"})
    pages["profile_ok"] = flow.client.post("/oauth2/profile", {"rid": pending, "membership": str(practitioner.pk)})
    flow.client.get(f"/oauth2/authorize/resume?rid={pending}")
    pages["consent"] = flow.client.get(f"/oauth2/consent?rid={pending}")
    pages["consent_ok"] = flow.client.post("/oauth2/consent", {"rid": pending, "action": "allow"})
    pages["complete"] = flow.client.get(pages["consent_ok"]["Location"])
    return pages


PAGES = ["authorize_error", "authorize_redirect", "authorize_post", "expired", "signin", "signin_failed",
         "signin_ok", "resume", "profile", "profile_bad", "profile_ok", "consent", "consent_ok", "complete"]


@pytest.mark.spec("RFC 9700 §4.16, §4.2.4")
@pytest.mark.parametrize("page", PAGES)
def test_every_auth_page_has_security_headers(flow, practitioner, page):
    response = _pages(flow, practitioner)[page]
    assert_auth_page_headers(response)
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "no-cache" in response["Cache-Control"]
    assert "private" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]


@pytest.mark.spec("RFC 9700 §4.12")
def test_page_statuses_along_the_way(flow, practitioner):
    statuses = {name: response.status_code for name, response in _pages(flow, practitioner).items()}
    assert statuses == {
        "authorize_error": 400, "authorize_redirect": 302, "authorize_post": 302, "expired": 400, "signin": 200,
        "signin_failed": 400, "signin_ok": 302, "resume": 302, "profile": 200, "profile_bad": 400,
        "profile_ok": 302, "consent": 200, "consent_ok": 302, "complete": 302,
    }


# --- profile chooser ---------------------------------------------------------------------------------


@pytest.mark.spec("Medplum /auth/profile (membership choice)")
def test_profile_chooser_lists_every_profile_in_the_project(flow, patient, practitioner):
    response = flow.client.get(to_profile_page(flow)["Location"])
    assert response.status_code == 200
    assert {m.pk for m in response.context["memberships"]} == {patient.pk, practitioner.pk}
    html = response.content.decode()
    assert f'value="{patient.pk}"' in html and "Pat Lee" in html
    assert f'value="{practitioner.pk}"' in html and "Dr Lee" in html
    assert "for <strong>Public app</strong>" in html


@pytest.mark.spec("Medplum /auth/profile (membership choice), SMART fhirUser")
@pytest.mark.parametrize("choice", ["patient", "practitioner"])
def test_chosen_profile_is_the_token_profile(flow, patient, practitioner, issuer, choice):
    membership = {"patient": patient, "practitioner": practitioner}[choice]
    pending = rid(to_profile_page(flow, scope="openid fhirUser"))
    response = flow.client.post("/oauth2/profile", {"rid": pending, "membership": str(membership.pk)})
    assert response.status_code == 302
    assert response["Location"] == f"/oauth2/authorize/resume?rid={pending}"
    response = flow.client.get(response["Location"])
    assert response["Location"].startswith("/oauth2/consent?rid=")
    response = flow.client.post("/oauth2/consent", {"rid": pending, "action": "allow", "scope": ["fhirUser"]})
    body = finish(flow, response)
    assert body["profile"] == {"reference": membership.profile, "display": membership.profile_display}
    assert access_token_claims(body["access_token"])["profile"] == membership.profile
    assert id_token_claims(body["id_token"])["fhirUser"] == f"{auth_settings.fhir_base_url}/{membership.profile}"
    assert Login.objects.get().membership == membership
    assert ("patient" in body) is (choice == "patient")


@pytest.mark.spec("Medplum /auth/profile (membership choice)")
@pytest.mark.parametrize("other", ["other_user", "other_project", "inactive", "garbage", "missing"])
def test_profile_choice_outside_the_offer_is_refused(flow, patient, practitioner, oauth_project, other):
    other_project = ProjectFactory()
    inactive = MembershipFactory(project=oauth_project, user=patient.user, profile_type="RelatedPerson", active=False)
    candidates = {
        "other_user": lambda: MembershipFactory(project=oauth_project).pk,
        "other_project": lambda: MembershipFactory(project=other_project, user=patient.user).pk,
        "inactive": lambda: inactive.pk,
        "garbage": lambda: "'; drop table x; --",
        "missing": lambda: None,
    }
    value = candidates[other]()
    pending = rid(to_profile_page(flow))
    data = {"rid": pending} if value is None else {"rid": pending, "membership": str(value)}
    response = flow.client.post("/oauth2/profile", data)
    assert response.status_code == 400
    assert response.context["error"] == "Choose one of your profiles."
    assert {m.pk for m in response.context["memberships"]} == {patient.pk, practitioner.pk}
    assert "membership" not in flow.client.session[authorization.SESSION_KEY][pending]
    assert not Login.objects.exists()


@pytest.mark.spec("Medplum /auth/profile (membership choice)")
def test_profiles_of_other_projects_and_inactive_ones_are_not_offered(flow, patient, oauth_project):
    MembershipFactory(project=ProjectFactory(), user=patient.user, profile_type="Practitioner")
    MembershipFactory(project=oauth_project, user=patient.user, profile_type="Practitioner", active=False)
    # One usable profile left: no chooser at all.
    body = finish(flow, flow.sign_in(flow.authorize()))
    assert body["profile"]["reference"] == patient.profile


@pytest.mark.spec("Medplum /auth/profile (membership choice)")
def test_chooser_offers_only_active_profiles_in_this_project(flow, patient, practitioner, oauth_project):
    elsewhere = MembershipFactory(project=ProjectFactory(), user=patient.user, profile_type="Practitioner")
    inactive = MembershipFactory(project=oauth_project, user=patient.user, profile_type="RelatedPerson",
                                 active=False)
    page = flow.client.get(to_profile_page(flow)["Location"])
    html = page.content.decode()
    assert str(elsewhere.pk) not in html
    assert str(inactive.pk) not in html
    assert len(page.context["memberships"]) == 2


@pytest.mark.spec("RFC 6749 §4.1.2.1 access_denied")
def test_user_without_a_profile_in_the_project_is_access_denied(flow, patient, issuer):
    patient.project = ProjectFactory()
    patient.save()
    response = flow.follow(flow.sign_in(flow.authorize()))
    params = query(response["Location"])
    assert response["Location"].startswith(REDIRECT_URI + "?")
    assert params["error"] == "access_denied"
    assert params["state"] == "xyz-state"
    assert params["iss"] == issuer
    assert "code" not in params
    assert not Login.objects.exists()


@pytest.mark.spec("Medplum /auth/profile (membership choice)")
def test_profile_deactivated_while_choosing_is_refused(flow, patient, practitioner):
    pending = rid(to_profile_page(flow))
    practitioner.active = False
    practitioner.save()
    response = flow.client.post("/oauth2/profile", {"rid": pending, "membership": str(practitioner.pk)})
    assert response.status_code == 400


@pytest.mark.spec("OIDC Core §3.1.2.3")
def test_profile_and_consent_pages_need_a_signed_in_user(flow):
    pending = rid(flow.authorize(scope="openid profile"))
    for path in ("/oauth2/profile", "/oauth2/consent"):
        for response in (flow.client.get(f"{path}?rid={pending}"),
                         flow.client.post(path, {"rid": pending, "action": "allow", "membership": "x"})):
            assert response.status_code == 302
            assert response["Location"] == f"/oauth2/authorize/resume?rid={pending}"
    assert flow.client.get(f"/oauth2/authorize/resume?rid={pending}")["Location"].startswith("/oauth2/signin")
    assert not Consent.objects.exists()


# --- consent ---------------------------------------------------------------------------------------


@pytest.mark.spec("OIDC Core §3.1.2.4")
def test_consent_is_asked_for_scopes_beyond_openid(flow, issuer):
    response = to_consent_page(flow, scope="openid profile email patient/Observation.rs")
    page = flow.client.get(response["Location"])
    assert page.status_code == 200
    rows = page.context["rows"]
    assert [row["scope"] for row in rows] == ["openid", "profile", "email", "patient/Observation.rs"]
    assert [row["required"] for row in rows] == [True, False, False, False]
    html = page.content.decode()
    assert "Allow Public app access?" in html
    assert "Read, search Observation records for the selected patient" in html
    assert 'value="openid" checked disabled' in html
    body = finish(flow, flow.client.post("/oauth2/consent", {"rid": rid(response), "action": "allow",
                                                             "scope": [r["scope"] for r in rows]}))
    assert body["scope"] == "openid profile email patient/Observation.rs"
    assert Consent.objects.get().scope == "openid profile email patient/Observation.rs"


@pytest.mark.spec("OIDC Core §3.1.2.4")
def test_consent_is_skipped_for_openid_alone(flow):
    response = flow.follow(flow.sign_in(flow.authorize(scope="openid")), approve=False)
    assert response["Location"].startswith(REDIRECT_URI + "?")
    assert not Consent.objects.exists()


@pytest.mark.spec("OIDC Core §3.1.2.4")
@pytest.mark.parametrize(("stored", "requested", "asked"), [
    ("openid profile email", "openid profile email", False),
    ("openid profile email", "openid email", False),
    ("openid profile email", "email profile openid", False),
    ("openid profile", "openid profile email", True),
    ("openid", "openid profile", True),
])
def test_prior_consent_covers_the_same_or_fewer_scopes(flow, public_client, patient, stored, requested, asked):
    Consent.objects.create(user=patient.user, client=public_client, scope=stored)
    response = flow.client.get(flow.sign_in(flow.authorize(scope=requested))["Location"])
    assert response["Location"].startswith("/oauth2/consent?rid=") is asked


@pytest.mark.spec("OIDC Core §3.1.2.4")
def test_consent_of_another_client_or_user_does_not_count(flow, oauth_project, patient):
    other_client = ClientApplicationFactory(project=oauth_project)
    Consent.objects.create(user=patient.user, client=other_client, scope="openid profile")
    Consent.objects.create(user=UserFactory(), client=flow.app, scope="openid profile")
    to_consent_page(flow, scope="openid profile")


@pytest.mark.spec("OIDC Core §3.1.2.1 prompt=consent")
def test_prompt_consent_asks_again_and_replaces_the_stored_decision(flow, public_client, patient):
    Consent.objects.create(user=patient.user, client=public_client, scope="openid profile email")
    response = to_consent_page(flow, scope="openid profile email", prompt="consent")
    finish(flow, flow.client.post("/oauth2/consent", {"rid": rid(response), "action": "allow", "scope": ["email"]}))
    assert Consent.objects.get().scope == "openid email"


@pytest.mark.spec("RFC 6749 §4.1.2.1 access_denied")
@pytest.mark.parametrize("action", ["deny", "", "bogus"])
def test_denying_consent_is_access_denied(flow, issuer, action):
    response = to_consent_page(flow, scope="openid profile", state="s-1")
    pending = rid(response)
    data = {"rid": pending, "scope": ["profile"]}
    if action:
        data["action"] = action
    response = flow.client.post("/oauth2/consent", data)
    assert response.status_code == 302
    params = query(response["Location"])
    assert response["Location"].startswith(REDIRECT_URI + "?")
    assert params == {"error": "access_denied", "error_description": "The user denied the request.",
                      "state": "s-1", "iss": issuer}
    assert not Login.objects.exists()
    assert not Consent.objects.exists()
    assert pending not in flow.client.session[authorization.SESSION_KEY]


@pytest.mark.spec("OIDC Core §3.1.2.4, RFC 6749 §3.3")
def test_deselected_scopes_are_not_granted(flow, patient, public_client):
    response = to_consent_page(flow, scope="openid profile email offline_access")
    body = finish(flow, flow.client.post("/oauth2/consent", {"rid": rid(response), "action": "allow",
                                                             "scope": ["openid", "email"]}))
    assert body["scope"] == "openid email"
    assert "refresh_token" not in body
    assert access_token_claims(body["access_token"])["scope"] == "openid email"
    claims = id_token_claims(body["id_token"])
    assert claims["email"] == "pat@example.org"
    assert "name" not in claims
    assert Login.objects.get().scope == "openid email"
    assert Consent.objects.get(user=patient.user, client=public_client).scope == "openid email"
    info = flow.client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}").json()
    assert set(info) == {"sub", "email", "email_verified"}


@pytest.mark.spec("OIDC Core §3.1.2.4")
def test_openid_cannot_be_dropped(flow):
    response = to_consent_page(flow, scope="openid profile")
    body = finish(flow, flow.client.post("/oauth2/consent", {"rid": rid(response), "action": "allow"}))
    assert body["scope"] == "openid"
    assert "id_token" in body
    assert Consent.objects.get().scope == "openid"


@pytest.mark.spec("RFC 6749 §3.3")
def test_posting_unrequested_scopes_cannot_widen_the_grant(flow):
    response = to_consent_page(flow, scope="openid profile")
    tampered = ["openid", "profile", "email", "offline_access", "user/*.cruds", "system/*.*"]
    body = finish(flow, flow.client.post("/oauth2/consent", {"rid": rid(response), "action": "allow",
                                                             "scope": tampered}))
    assert body["scope"] == "openid profile"
    assert "refresh_token" not in body
    assert Consent.objects.get().scope == "openid profile"
    assert Login.objects.get().scope == "openid profile"


@pytest.mark.spec("OIDC Core §3.1.2.4")
def test_narrowed_consent_asks_again_for_the_dropped_scope(flow):
    response = to_consent_page(flow, scope="openid profile email")
    finish(flow, flow.client.post("/oauth2/consent", {"rid": rid(response), "action": "allow", "scope": ["profile"]}))
    response = flow.client.get(flow.authorize(scope="openid profile email")["Location"])  # session: no sign-in
    assert response.request["PATH_INFO"] == "/oauth2/consent"
    assert flow.authorize(scope="openid profile")["Location"].startswith(REDIRECT_URI + "?")


@pytest.mark.spec("RFC 6749 §10.12")
def test_consent_page_for_a_pending_request_of_another_browser_is_refused(flow, public_client, patient):
    response = to_consent_page(flow, scope="openid profile")
    other = Flow(Client(), public_client)
    other.redirect()  # signed in as the same user, in another browser
    attempt = other.client.post("/oauth2/consent", {"rid": rid(response), "action": "allow", "scope": ["profile"]})
    assert attempt.status_code == 400
    assert not Consent.objects.exists()
