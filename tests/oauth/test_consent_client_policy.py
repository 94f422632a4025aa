"""The consent page never offers what the client's access policy keeps the app from reaching."""

from __future__ import annotations

import pytest

from medplum_auth.models import Consent
from tests.factories import AccessPolicyFactory
from tests.oauth.conftest import REDIRECT_URI, access_token_claims, rid
from tests.oauth.test_signin_pages import finish, to_consent_page

pytestmark = [pytest.mark.django_db, pytest.mark.spec("issue: client policy restricts users in every flow")]

SCOPES = "openid profile patient/Observation.rs patient/Condition.rs"


@pytest.fixture
def observation_only(public_client, oauth_project):
    public_client.access_policy = AccessPolicyFactory(
        project=oauth_project, name="Observations", resources=[{"resourceType": "Observation",
                                                                "interaction": ["read", "search"]}])
    public_client.save()
    return public_client


def test_a_scope_the_client_policy_forbids_is_shown_as_not_available(flow, observation_only):
    response = to_consent_page(flow, scope=SCOPES)
    page = flow.client.get(response["Location"])
    rows = {row["scope"]: row["available"] for row in page.context["rows"]}
    assert rows == {"openid": True, "profile": True, "patient/Observation.rs": True, "patient/Condition.rs": False}
    html = page.content.decode()
    assert 'value="patient/Observation.rs" checked' in html
    assert 'value="patient/Condition.rs"' not in html  # no checkbox to tick
    assert "not available: this app's access policy does not allow it" in html
    # Even if a crafted form submits it, it is not granted.
    body = finish(flow, flow.client.post("/oauth2/consent", {
        "rid": rid(response), "action": "allow",
        "scope": ["profile", "patient/Observation.rs", "patient/Condition.rs"]}))
    assert body["scope"] == "openid profile patient/Observation.rs"
    assert access_token_claims(body["access_token"])["scope"] == "openid profile patient/Observation.rs"
    assert Consent.objects.get().scope == "openid profile patient/Observation.rs"


def test_a_prior_consent_is_not_asked_again_for_an_unavailable_scope(flow, observation_only, patient):
    Consent.objects.create(user=patient.user, client=observation_only, scope="openid profile patient/Observation.rs")
    response = flow.follow(flow.sign_in(flow.authorize(scope=SCOPES)), approve=False)
    assert response["Location"].startswith(REDIRECT_URI + "?")  # no consent page: nothing new is offered
    body = flow.token(dict(p.split("=", 1) for p in response["Location"].split("?")[1].split("&"))["code"]).json()
    assert body["scope"] == "openid profile patient/Observation.rs"


def test_unavailable_scopes_are_kept_when_no_resource_scope_would_remain(flow, observation_only):
    """Dropping every resource scope would leave the policies alone in charge, granting more than
    the request asked for; the scopes stay (and grant nothing)."""
    response = to_consent_page(flow, scope="openid patient/Condition.rs")
    page = flow.client.get(response["Location"])
    assert [row["available"] for row in page.context["rows"]] == [True, False]
    body = finish(flow, flow.client.post("/oauth2/consent", {"rid": rid(response), "action": "allow"}))
    assert body["scope"] == "openid patient/Condition.rs"


def test_without_a_client_policy_every_scope_is_offered(flow):
    response = to_consent_page(flow, scope=SCOPES)
    page = flow.client.get(response["Location"])
    assert all(row["available"] for row in page.context["rows"])
