"""The account page (``/oauth2/account``): apps with access (remembered consents) and sessions, each
with Revoke; the consent page says the choice is remembered and links here."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from medplum_auth.models import Consent, Login
from tests.factories import DEFAULT_PASSWORD, ClientApplicationFactory, MembershipFactory, UserFactory
from tests.oauth.conftest import REDIRECT_URI, Flow, assert_auth_page_headers, post_form, rid

pytestmark = pytest.mark.django_db

ACCOUNT = "/oauth2/account"
SCOPE = "openid profile patient/Observation.rs offline_access"


def me(token: str, client: Client | None = None) -> int:
    return (client or Client()).get("/auth/me", HTTP_AUTHORIZATION=f"Bearer {token}").status_code


def csrf_token(page) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)


@pytest.fixture
def signed_in(flow):
    """The patient approved the public app (consent stored) and holds its tokens."""
    tokens = flow.tokens(scope=SCOPE)
    return flow, tokens


def test_consent_page_says_the_choice_is_remembered_and_links_to_the_account_page(flow):
    response = flow.client.get(flow.sign_in(flow.authorize(scope="openid profile"))["Location"])
    page = flow.client.get(response["Location"])
    body = page.content.decode()
    assert "If you allow, your choice is remembered: Public app will not ask again" in body
    assert f'href="{ACCOUNT}#apps"' in body and "(Apps with access, Revoke)" in body


SIGNIN = "/oauth2/account/signin"


def test_anonymous_account_page_asks_to_sign_in_and_signs_in(client, patient):
    page = client.get(ACCOUNT)
    assert page.status_code == 302 and page["Location"] == f"{SIGNIN}?next={ACCOUNT}"
    form = client.get(page["Location"])
    assert_auth_page_headers(form)
    assert 'name="password"' in form.content.decode() and f'name="next" value="{ACCOUNT}"' in form.content.decode()
    wrong = client.post(SIGNIN, {"email": "pat@example.org", "password": "nope", "next": ACCOUNT})
    assert wrong.status_code == 400 and "Email or password is invalid" in wrong.content.decode()
    ok = client.post(SIGNIN, {"email": "pat@example.org", "password": DEFAULT_PASSWORD, "next": ACCOUNT})
    assert ok.status_code == 302 and ok["Location"] == ACCOUNT
    assert "Signed in as pat@example.org" in client.get(ACCOUNT).content.decode()


def test_account_page_lists_the_users_apps_and_sessions_only(signed_in, oauth_project):
    flow, _tokens = signed_in
    someone = UserFactory(email="other@example.org")
    Consent.objects.create(user=someone, client=ClientApplicationFactory(project=oauth_project, name="Not mine"),
                           scope="openid")
    page = flow.client.get(ACCOUNT)
    assert page.status_code == 200
    assert_auth_page_headers(page)
    body = page.content.decode()
    assert [c.client.name for c in page.context["consents"]] == ["Public app"]
    assert [s.client.name for s in page.context["sessions"]] == ["Public app"]
    assert "Not mine" not in body
    assert SCOPE in body and body.count(">Revoke</button>") == 2


def test_revoking_an_app_deletes_its_consent_and_ends_its_sessions(signed_in, oauth_project, patient):
    flow, tokens = signed_in
    other_app = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=REDIRECT_URI,
                                         name="Other app")
    other = Flow(flow.client, other_app).tokens(scope="openid profile")
    consent = Consent.objects.get(client=flow.app)
    assert me(tokens["access_token"]) == 200

    response = flow.client.post(ACCOUNT, {"action": "revoke-app", "consent": consent.pk})
    assert response.status_code == 303 and response["Location"] == f"{ACCOUNT}?done=app"
    assert not Consent.objects.filter(pk=consent.pk).exists()
    assert Consent.objects.filter(client=other_app).exists()
    assert me(tokens["access_token"]) == 401  # the app's tokens stop working at once
    assert me(other["access_token"]) == 200
    login = Login.objects.get(client=flow.app)
    assert login.revoked_reason == "consent_revoked"
    refresh = post_form(flow.client, "/oauth2/token", {"grant_type": "refresh_token", "client_id": flow.app.client_id,
                                                       "refresh_token": tokens["refresh_token"]})
    assert refresh.json()["error"] == "invalid_grant"
    assert "Access revoked" in flow.client.get(response["Location"]).content.decode()

    # The next authorization request asks for consent again.
    again = flow.authorize(scope="openid profile")
    assert again.status_code == 302 and again["Location"].startswith("/oauth2/consent?rid="), again["Location"]


def test_revoking_a_session_revokes_that_login_only(signed_in):
    flow, tokens = signed_in
    second = flow.tokens(scope=SCOPE)
    first_login = Login.objects.order_by("created").first()
    response = flow.client.post(ACCOUNT, {"action": "revoke-session", "login": str(first_login.pk)})
    assert response.status_code == 303
    first_login.refresh_from_db()
    assert first_login.revoked_reason == "revoked_by_user"
    assert me(tokens["access_token"]) == 401 and me(second["access_token"]) == 200
    assert Consent.objects.filter(client=flow.app).exists()  # the app keeps its consent
    assert [s.pk for s in flow.client.get(ACCOUNT).context["sessions"]] == [
        Login.objects.exclude(pk=first_login.pk).get().pk]


@pytest.mark.parametrize("action", ["revoke-app", "revoke-session"])
def test_another_users_consent_or_session_cannot_be_revoked(signed_in, oauth_project, action):
    flow, _tokens = signed_in
    someone = MembershipFactory(project=oauth_project, profile_type="Patient").user
    consent = Consent.objects.create(user=someone, client=flow.app, scope="openid")
    login = Login.objects.get()
    Login.objects.filter(pk=login.pk).update(user=someone)
    value = {"consent": consent.pk} if action == "revoke-app" else {"login": str(login.pk)}
    assert flow.client.post(ACCOUNT, {"action": action, **value}).status_code == 404
    assert Consent.objects.filter(pk=consent.pk).exists()
    assert Login.objects.get(pk=login.pk).revoked_at is None


@pytest.mark.parametrize("value", ["", "x", "9" * 40, "\x00"])
def test_bad_ids_are_404(signed_in, value):
    flow, _tokens = signed_in
    assert flow.client.post(ACCOUNT, {"action": "revoke-app", "consent": value}).status_code == 404
    assert flow.client.post(ACCOUNT, {"action": "revoke-session", "login": value}).status_code == 404


def test_revoking_needs_a_signed_in_user(client, public_client, patient):
    consent = Consent.objects.create(user=patient.user, client=public_client, scope="openid")
    response = client.post(ACCOUNT, {"action": "revoke-app", "consent": consent.pk})
    assert response.status_code == 403
    assert Consent.objects.filter(pk=consent.pk).exists()


def test_revoking_needs_the_csrf_token(public_client, patient):
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(SIGNIN)
    signed = browser.post(SIGNIN, {"email": "pat@example.org", "password": DEFAULT_PASSWORD,
                                   "csrfmiddlewaretoken": csrf_token(page)})
    assert signed.status_code == 302
    consent = Consent.objects.create(user=patient.user, client=public_client, scope="openid")
    refused = browser.post(ACCOUNT, {"action": "revoke-app", "consent": consent.pk})
    assert refused.status_code == 403 and Consent.objects.filter(pk=consent.pk).exists()
    token = csrf_token(browser.get(ACCOUNT))
    done = browser.post(ACCOUNT, {"action": "revoke-app", "consent": consent.pk, "csrfmiddlewaretoken": token})
    assert done.status_code == 303 and not Consent.objects.filter(pk=consent.pk).exists()


def test_unknown_action_is_400(signed_in):
    flow, _tokens = signed_in
    assert flow.client.post(ACCOUNT, {"action": "nope"}).status_code == 400


def test_consent_then_account_round_trip_through_the_pages(flow):
    """The consent page's link leads to the page where the just-remembered choice is revoked."""
    response = flow.client.get(flow.sign_in(flow.authorize(scope="openid profile"))["Location"])
    flow.client.post("/oauth2/consent", {"rid": rid(response), "action": "allow", "scope": ["profile"]})
    page = flow.client.get(ACCOUNT)
    assert [c.scope for c in page.context["consents"]] == ["openid profile"]
