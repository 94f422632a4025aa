"""``/oauth2/authorize``: request validation, errors, prompt, max_age and hints (RFC 6749 §4.1, OIDC Core §3.1.2).

Fatal errors (client, redirect URI) render an HTML 400 page and never redirect; every other
error goes back to the registered redirect URI with ``error``, ``error_description``, ``state``
and ``iss`` (RFC 9207). The RFC 9700 §3b checklist items that concern this endpoint are at the end.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlencode

import pytest
from django.test import Client, override_settings

from medplum_auth import authorization, tokens
from medplum_auth.conf import auth_settings
from medplum_auth.models import ClientApplication, Consent, Login
from tests.factories import ClientApplicationFactory, MembershipFactory, UserFactory
from tests.oauth.conftest import (
    REDIRECT_URI,
    Flow,
    assert_auth_page_headers,
    id_token_claims,
    post_form,
    query,
    rid,
)

OTHER_URI = "https://app.example.org/other"



@pytest.fixture
def signed_in(flow):
    """A browser that has completed one code flow: it has a session at the server."""
    flow.redirect()
    return flow


@pytest.fixture
def practitioner(patient, oauth_project):
    """The patient's user also works in the clinic: two memberships in the client's project."""
    return MembershipFactory(project=oauth_project, user=patient.user, profile_type="Practitioner",
                             profile_display="Dr Lee")


def backdate_sign_in(client: Client, seconds: float) -> None:
    """Pretend the session's sign-in happened ``seconds`` earlier."""
    session = client.session
    session[authorization.AUTH_TIME_KEY] -= seconds
    session.save()


def pending_requests(client: Client) -> dict:
    return client.session.get(authorization.SESSION_KEY, {})


def assert_error_page(response, text: str) -> None:
    """A fatal error: HTML 400, no redirect (RFC 6749 §4.1.2.1)."""
    assert response.status_code == 400, response.content
    assert not response.has_header("Location")
    assert response["Content-Type"].startswith("text/html")
    assert text in response.content.decode()
    assert_auth_page_headers(response)


def assert_error_redirect(response, error: str, state: str | None = "xyz-state", uri: str = REDIRECT_URI) -> dict:
    """An error sent back to the client: ``error``, description, ``state`` and ``iss``; no code."""
    assert response.status_code == 302, response.content
    location = response["Location"]
    assert location.startswith(uri + "?"), location
    params = query(location)
    assert params["error"] == error, params
    assert params["error_description"]
    assert not set(params["error_description"]) & {"\r", "\n", "\t"}
    assert params["iss"] == auth_settings.ISSUER
    assert params.get("state") == state
    assert "code" not in params
    return params


# --- GET and POST ----------------------------------------------------------------------------


@pytest.mark.spec("OIDC Core §3.1.2.1")
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_get_and_post_complete_the_flow(flow, issuer, method):
    response = flow.authorize() if method == "GET" else flow.post_authorize()
    assert response.status_code == 302
    assert response["Location"].startswith("/oauth2/signin?rid=")
    response = flow.follow(flow.sign_in(response))
    params = query(response["Location"])
    assert response["Location"].startswith(REDIRECT_URI + "?")
    assert set(params) == {"code", "state", "iss"}
    assert params["state"] == "xyz-state"
    assert params["iss"] == issuer
    assert flow.token(params["code"]).status_code == 200


@pytest.mark.spec("OIDC Core §3.1.2.1")
@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, "signin"),
    ({"scope": "openid bogus"}, "invalid_scope"),
    ({"code_challenge": None}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"client_id": "nope"}, 400),
    ({"redirect_uri": "https://evil.example.org/cb"}, 400),
])
def test_get_and_post_requests_are_answered_alike(client, public_client, patient, overrides, expected):
    flow = Flow(client, public_client)
    get = flow.authorize(**overrides)
    post = flow.post_authorize(**overrides)
    assert get.status_code == post.status_code
    if expected == 400:
        assert get.status_code == 400
        assert get.content == post.content
    elif expected == "signin":
        assert get["Location"].split("?rid=")[0] == post["Location"].split("?rid=")[0] == "/oauth2/signin"
    else:
        assert get["Location"] == post["Location"]
        assert query(get["Location"])["error"] == expected


@pytest.mark.spec("OIDC Core §3.1.2.1")
def test_post_authorization_request_is_not_a_consent_submit(signed_in):
    """DOT treats any POST to its authorize view as the consent form and answers access_denied."""
    response = signed_in.post_authorize()
    assert response.status_code == 302
    params = query(response["Location"])
    assert "error" not in params
    assert params["code"]
    # A request that needs consent still shows the consent page; "action"/"allow" fields are not consent.
    response = signed_in.post_authorize(scope="openid profile", action="allow", allow="Authorize")
    assert response["Location"].startswith("/oauth2/consent?rid=")
    assert not Consent.objects.exists()


@pytest.mark.spec("RFC 6749 §4.1.1")
def test_post_authorization_request_needs_no_csrf_token(public_client, patient):
    """A POST authorization request comes from the client's site: it cannot carry our CSRF token."""
    flow = Flow(Client(enforce_csrf_checks=True), public_client)
    response = flow.post_authorize()
    assert response.status_code == 302
    assert response["Location"].startswith("/oauth2/signin?rid=")


# --- fatal errors: an HTML page, never a redirect -------------------------------------------------


def _disable_client(app):
    app.status = ClientApplication.Status.OFF
    app.save()


def _deactivate_project(app):
    app.project.active = False
    app.project.save()


@pytest.mark.spec("RFC 6749 §4.1.2.1")
@pytest.mark.parametrize(("overrides", "change", "text"), [
    ({"client_id": "no-such-client"}, None, "Client not found"),
    ({"client_id": None}, None, "Client not found"),
    ({"client_id": ""}, None, "Client not found"),
    ({}, _disable_client, "Client not found"),
    ({}, _deactivate_project, "Client not found"),
    ({"redirect_uri": "https://evil.example.org/callback"}, None, "Invalid redirect URI"),
    ({"redirect_uri": REDIRECT_URI + "/"}, None, "Invalid redirect URI"),
    ({"redirect_uri": "https://App.example.org/callback"}, None, "Invalid redirect URI"),
    ({"redirect_uri": "https://app.example.org/Callback"}, None, "Invalid redirect URI"),
    ({"redirect_uri": REDIRECT_URI + "?extra=1"}, None, "Invalid redirect URI"),
    ({"redirect_uri": REDIRECT_URI + "#fragment"}, None, "Invalid redirect URI"),
    ({"redirect_uri": "http://app.example.org/callback"}, None, "Invalid redirect URI"),
    ({"redirect_uri": "https://app.example.org:443/callback"}, None, "Invalid redirect URI"),
    ({"redirect_uri": "/callback"}, None, "Invalid redirect URI"),
    ({"redirect_uri": ""}, None, "Invalid redirect URI"),
])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_fatal_errors_render_a_page_without_redirect(flow, public_client, overrides, change, text, method):
    if change:
        change(public_client)
    response = flow.authorize(**overrides) if method == "GET" else flow.post_authorize(**overrides)
    assert_error_page(response, text)
    assert "evil.example.org" not in response.content.decode()
    assert not Login.objects.exists()
    assert pending_requests(flow.client) == {}


@pytest.mark.spec("RFC 6749 §3.1")
@pytest.mark.parametrize("name", ["client_id", "redirect_uri", "response_type", "scope", "state",
                                  "code_challenge", "nonce", "prompt"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_duplicated_parameters_render_a_page(flow, name, method):
    params = flow.params(prompt="login")
    body = urlencode([*params.items(), (name, params[name])])
    if method == "GET":
        response = flow.client.get(f"/oauth2/authorize?{body}")
    else:
        response = flow.client.post("/oauth2/authorize", body, content_type="application/x-www-form-urlencoded")
    assert_error_page(response, "Duplicate parameters.")
    assert pending_requests(flow.client) == {}


@pytest.mark.spec("RFC 6749 §3.1.2.3")
def test_redirect_uri_may_be_omitted_with_one_registered_uri(flow, issuer):
    location = flow.redirect(redirect_uri=None)
    params = query(location)
    assert location.startswith(REDIRECT_URI + "?")
    assert params["iss"] == issuer
    login = Login.objects.get()
    assert login.redirect_uri == ""  # nothing to compare at the token endpoint (RFC 6749 §4.1.3)
    response = flow.token(params["code"], redirect_uri=None)
    assert response.status_code == 200, response.content


@pytest.mark.spec("RFC 6749 §3.1.2.3")
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_redirect_uri_is_required_with_several_registered_uris(client, oauth_project, patient, method):
    app = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=f"{REDIRECT_URI}\n{OTHER_URI}")
    flow = Flow(client, app)
    response = flow.authorize(redirect_uri=None) if method == "GET" else flow.post_authorize(redirect_uri=None)
    assert_error_page(response, "Missing redirect URI")


@pytest.mark.spec("RFC 6749 §4.1.3")
def test_each_registered_redirect_uri_receives_its_code(client, oauth_project, patient):
    app = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=f"{REDIRECT_URI}\n{OTHER_URI}")
    flow = Flow(client, app)
    location = flow.follow(flow.sign_in(flow.authorize(redirect_uri=OTHER_URI)))["Location"]
    assert location.startswith(OTHER_URI + "?")
    code = query(location)["code"]
    assert flow.token(code, redirect_uri=REDIRECT_URI).json()["error"] == "invalid_grant"
    assert flow.token(code, redirect_uri=OTHER_URI).status_code == 200


# --- errors sent back to the client -----------------------------------------------------------


@pytest.mark.spec("RFC 6749 §4.1.2.1")
@pytest.mark.parametrize(("response_type", "error"), [
    (None, "invalid_request"),
    ("", "unsupported_response_type"),
    ("token", "unsupported_response_type"),
    ("id_token", "unsupported_response_type"),
    ("code id_token", "unsupported_response_type"),
    ("code token", "unsupported_response_type"),
    ("code id_token token", "unsupported_response_type"),
    ("none", "unsupported_response_type"),
    ("CODE", "unsupported_response_type"),
])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_response_type_other_than_code_is_refused(flow, response_type, error, method):
    overrides = {"response_type": response_type}
    response = flow.authorize(**overrides) if method == "GET" else flow.post_authorize(**overrides)
    assert_error_redirect(response, error)
    assert not Login.objects.exists()
    assert pending_requests(flow.client) == {}


@pytest.mark.spec("RFC 6749 §4.1.2.1")
@pytest.mark.parametrize("state", [None, "", "s p a c e & more=1"])
def test_error_redirect_echoes_state_exactly(flow, state):
    response = flow.authorize(scope="openid bogus", state=state)
    assert_error_redirect(response, "invalid_scope", state=state or None)


@pytest.mark.spec("RFC 6749 §4.1.2.1")
def test_error_redirect_keeps_the_registered_query(client, oauth_project, patient):
    uri = "https://app.example.org/cb?tenant=a"
    app = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=uri)
    response = Flow(client, app).authorize(redirect_uri=uri, scope="nope")
    assert response["Location"].startswith("https://app.example.org/cb?tenant=a&")
    assert query(response["Location"])["error"] == "invalid_scope"


@pytest.mark.spec("RFC 7636 §4.4.1")
@pytest.mark.parametrize(("overrides", "description"), [
    ({"code_challenge": None, "code_challenge_method": None}, "Code challenge required."),
    ({"code_challenge": None}, "Code challenge required."),
    ({"code_challenge_method": "plain"}, "Unsupported code_challenge_method: only S256 is supported."),
    ({"code_challenge_method": None}, "Missing code_challenge_method: only S256 is supported."),
    ({"code_challenge_method": "s256"}, "Unsupported code_challenge_method: only S256 is supported."),
    ({"code_challenge_method": "S512"}, "Unsupported code_challenge_method: only S256 is supported."),
])
@pytest.mark.parametrize("confidential", [False, True])
def test_pkce_s256_is_required(client, oauth_project, patient, overrides, description, confidential):
    app = ClientApplicationFactory(project=oauth_project, public=not confidential)
    response = Flow(client, app).authorize(**overrides)
    params = assert_error_redirect(response, "invalid_request")
    assert params["error_description"] == description
    assert not Login.objects.exists()


@pytest.mark.spec("RFC 7636 §4.4.1")
def test_pkce_optional_client_works_without_pkce(client, oauth_project, patient):
    app = ClientApplicationFactory(project=oauth_project, pkce_optional=True)
    flow = Flow(client, app)
    params = query(flow.redirect(code_challenge=None, code_challenge_method=None))
    login = Login.objects.get()
    assert login.code_challenge == login.code_challenge_method == ""
    response = post_form(client, "/oauth2/token", {
        "grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT_URI,
        "client_id": app.client_id, "client_secret": app.plaintext_secret})
    assert response.status_code == 200, response.content


@pytest.mark.spec("RFC 7636 §4.4.1")
def test_pkce_optional_client_still_gets_s256_only(client, oauth_project, patient):
    app = ClientApplicationFactory(project=oauth_project, pkce_optional=True)
    response = Flow(client, app).authorize(code_challenge_method="plain")
    params = assert_error_redirect(response, "invalid_request")
    assert params["error_description"] == "Unsupported code_challenge_method: only S256 is supported."


@pytest.mark.spec("RFC 6749 §3.3")
@pytest.mark.parametrize("scope", ["openid bogus", "patient/Observation.rx", "user/*.read?x=1", "openid OPENID",
                                   "patient/observation.read"])
def test_unknown_scope_is_invalid_scope(flow, scope):
    response = flow.authorize(scope=scope)
    assert_error_redirect(response, "invalid_scope")
    assert not Login.objects.exists()


@pytest.mark.spec("RFC 6749 §3.3")
def test_missing_scope_defaults_to_openid(flow):
    body = flow.tokens(scope=None)
    assert body["scope"] == "openid"
    assert Login.objects.get().scope == "openid"


@pytest.mark.spec("SMART App Launch 2.2 §2.0.6 aud")
@pytest.mark.parametrize("aud", ["https://evil.example.org/fhir/R4", "", "http://127.0.0.1:8000",
                                 "http://127.0.0.1:8000/fhir/R5", "http://127.0.0.1:8000/fhir/R4x"])
def test_aud_other_than_the_fhir_base_is_refused(flow, aud):
    response = flow.authorize(aud=aud)
    params = assert_error_redirect(response, "invalid_request")
    assert "aud" in params["error_description"]
    assert not Login.objects.exists()
    assert pending_requests(flow.client) == {}


@pytest.mark.spec("SMART App Launch 2.2 §2.0.6 aud")
@pytest.mark.parametrize("suffix", ["", "/"])
def test_aud_equal_to_the_fhir_base_is_accepted(flow, suffix):
    location = flow.redirect(aud=auth_settings.fhir_base_url + suffix)
    assert query(location)["code"]


@pytest.mark.spec("OIDC Core §6.1")
@pytest.mark.parametrize(("name", "error"), [("request", "request_not_supported"),
                                              ("request_uri", "request_uri_not_supported")])
def test_request_objects_are_not_supported(flow, name, error):
    value = "eyJhbGciOiJub25lIn0.eyJzY29wZSI6Im9wZW5pZCJ9." if name == "request" else "https://rp.example.org/r"
    response = flow.authorize(**{name: value})
    assert_error_redirect(response, error)
    assert not Login.objects.exists()


@pytest.mark.spec("RFC 6749 §3.1")
def test_unknown_parameters_are_ignored(flow):
    location = flow.redirect(extra="foobar", vendor_x="1", display="popup", ui_locales="fr-CA fr",
                             claims_locales="se", acr_values="urn:x", resource=auth_settings.fhir_base_url)
    params = query(location)
    assert params["code"]
    assert "extra" not in params
    assert flow.token(params["code"]).status_code == 200


@pytest.mark.spec("OIDC Core §3.1.2.1 max_age")
@pytest.mark.parametrize("max_age", ["-1", "abc", "1.5", "", " 5", "1e3", "99999999999"])
def test_bad_max_age_is_invalid_request(flow, max_age):
    params = assert_error_redirect(flow.authorize(max_age=max_age), "invalid_request")
    assert "max_age" in params["error_description"]


@pytest.mark.spec("OIDC Core §3.1.2.1 prompt")
@pytest.mark.parametrize("prompt", ["bogus", "none login", "none consent", "Login"])
def test_bad_prompt_is_invalid_request(flow, prompt):
    assert_error_redirect(flow.authorize(prompt=prompt), "invalid_request")


# --- prompt=none -----------------------------------------------------------------------------------


@pytest.mark.spec("OIDC Core §3.1.2.6 login_required")
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_prompt_none_without_session_is_login_required(flow, method):
    response = flow.authorize(prompt="none") if method == "GET" else flow.post_authorize(prompt="none")
    assert_error_redirect(response, "login_required")
    assert not Login.objects.exists()
    assert pending_requests(flow.client) == {}


@pytest.mark.spec("OIDC Core §3.1.2.1 prompt=none")
def test_prompt_none_with_session_returns_a_code_at_once(signed_in, issuer):
    first = Login.objects.get()
    response = signed_in.authorize(prompt="none", nonce="second")
    assert response.status_code == 302
    params = query(response["Location"])
    assert response["Location"].startswith(REDIRECT_URI + "?")
    assert set(params) == {"code", "state", "iss"}
    assert params["iss"] == issuer
    assert pending_requests(signed_in.client) == {}
    body = signed_in.token(params["code"]).json()
    claims = id_token_claims(body["id_token"])
    second = Login.objects.exclude(pk=first.pk).get()
    assert claims["sub"] == str(second.user_id) == str(first.user_id)
    assert claims["nonce"] == "second"
    assert claims["auth_time"] == int(first.auth_time.timestamp())


@pytest.mark.spec("OIDC Core §3.1.2.6 consent_required")
def test_prompt_none_needing_consent_is_consent_required(signed_in):
    response = signed_in.authorize(prompt="none", scope="openid profile")
    assert_error_redirect(response, "consent_required")
    assert Login.objects.count() == 1


@pytest.mark.spec("OIDC Core §3.1.2.6 consent_required")
def test_prompt_none_with_prior_consent_returns_a_code(signed_in, public_client, patient):
    Consent.objects.create(user=patient.user, client=public_client, scope="openid profile email")
    response = signed_in.authorize(prompt="none", scope="openid profile")
    assert query(response["Location"])["code"]


@pytest.mark.spec("OIDC Core §3.1.2.6 account_selection_required")
def test_prompt_none_with_two_profiles_is_account_selection_required(signed_in, practitioner):
    response = signed_in.authorize(prompt="none")
    assert_error_redirect(response, "account_selection_required")


@pytest.mark.spec("OIDC Core §3.1.2.6")
def test_prompt_none_without_a_profile_is_access_denied(signed_in, patient):
    patient.active = False
    patient.save()
    assert_error_redirect(signed_in.authorize(prompt="none"), "access_denied")


# --- prompt=login, prompt=consent, max_age ------------------------------------------------------------


@pytest.mark.spec("OIDC Core §3.1.2.1 prompt=login")
def test_prompt_login_forces_sign_in_and_a_later_auth_time(signed_in):
    backdate_sign_in(signed_in.client, 100)
    before = id_token_claims(signed_in.tokens(prompt="none")["id_token"])["auth_time"]
    response = signed_in.authorize(prompt="login")
    assert response.status_code == 302
    assert response["Location"].startswith("/oauth2/signin?rid="), response["Location"]
    page = signed_in.client.get(response["Location"])
    assert page.status_code == 200
    # The session is still there but not good enough: resuming without signing in asks again.
    again = signed_in.client.get(f"/oauth2/authorize/resume?rid={rid(response)}")
    assert again["Location"].startswith("/oauth2/signin?rid=")
    code = query(signed_in.follow(signed_in.sign_in(response))["Location"])["code"]
    after = id_token_claims(signed_in.token(code).json()["id_token"])["auth_time"]
    assert after >= before + 99
    assert abs(after - time.time()) < 5


@pytest.mark.spec("OIDC Core §3.1.2.1 prompt=consent")
def test_prompt_consent_forces_the_consent_page(signed_in, public_client, patient):
    Consent.objects.create(user=patient.user, client=public_client, scope="openid profile")
    assert query(signed_in.authorize(scope="openid profile")["Location"])["code"]
    response = signed_in.authorize(scope="openid profile", prompt="consent")
    assert response["Location"].startswith("/oauth2/consent?rid=")
    response = signed_in.authorize(prompt="consent")  # even for openid alone
    assert response["Location"].startswith("/oauth2/consent?rid=")


@pytest.mark.spec("OIDC Core §3.1.2.1 max_age")
def test_max_age_exceeded_forces_sign_in(signed_in):
    backdate_sign_in(signed_in.client, 120)
    response = signed_in.authorize(max_age="60")
    assert response["Location"].startswith("/oauth2/signin?rid=")
    code = query(signed_in.follow(signed_in.sign_in(response))["Location"])["code"]
    claims = id_token_claims(signed_in.token(code).json()["id_token"])
    assert abs(claims["auth_time"] - time.time()) < 5


@pytest.mark.spec("OIDC Core §3.1.2.1 max_age")
def test_max_age_not_exceeded_reuses_the_session(signed_in):
    backdate_sign_in(signed_in.client, 30)
    response = signed_in.authorize(max_age="60")
    code = query(response["Location"])["code"]
    claims = id_token_claims(signed_in.token(code).json()["id_token"])
    assert abs(claims["auth_time"] - (time.time() - 30)) < 5


@pytest.mark.spec("OIDC Core §3.1.2.1 max_age")
@pytest.mark.parametrize("prompt", [None, "none"])
def test_max_age_exceeded_with_prompt_none_is_login_required(signed_in, prompt):
    backdate_sign_in(signed_in.client, 120)
    response = signed_in.authorize(max_age="60", prompt=prompt)
    if prompt:
        assert_error_redirect(response, "login_required")
    else:
        assert response["Location"].startswith("/oauth2/signin?rid=")


@pytest.mark.spec("OIDC Core §3.1.2.1 max_age")
def test_max_age_zero_asks_once_and_completes(signed_in):
    """max_age=0 means "sign in now" (like prompt=login); a sign-in during the request satisfies it."""
    response = signed_in.authorize(max_age="0")
    assert response["Location"].startswith("/oauth2/signin?rid=")
    response = signed_in.follow(signed_in.sign_in(response))
    assert response["Location"].startswith(REDIRECT_URI + "?"), response["Location"]
    assert query(response["Location"])["code"]


@pytest.mark.spec("OIDC Core §3.1.2.1 max_age")
def test_short_max_age_survives_slow_profile_and_consent_pages(signed_in, practitioner, monkeypatch):
    """The user signed in during this request: minutes on the chooser and consent pages don't void it."""
    response = signed_in.sign_in(signed_in.authorize(max_age="1", scope="openid profile", prompt="login"))
    response = signed_in.client.get(response["Location"])  # resume → profile chooser
    assert response["Location"].startswith("/oauth2/profile?rid=")
    later = time.time() + 300
    monkeypatch.setattr(authorization.time, "time", lambda: later)
    response = signed_in.client.post("/oauth2/profile", {"rid": rid(response), "membership": str(practitioner.pk)})
    response = signed_in.follow(response)
    assert response["Location"].startswith(REDIRECT_URI + "?"), response["Location"]


# --- id_token_hint and login_hint ------------------------------------------------------------------


@pytest.fixture
def other_id_token(oauth_project, public_client):
    """An ID token of another user of the same client, from another browser."""
    user = UserFactory(email="sam@example.org")
    MembershipFactory(project=oauth_project, user=user)
    return _id_token_for(public_client, user)


def _id_token_for(app, user) -> str:
    flow = Flow(Client(), app)
    response = flow.follow(flow.sign_in(flow.authorize(), email=user.email))
    return flow.token(query(response["Location"])["code"]).json()["id_token"]


@pytest.mark.spec("OIDC Core §3.1.2.1 id_token_hint")
def test_id_token_hint_of_the_signed_in_user_succeeds_silently(signed_in, public_client, patient):
    hint = _id_token_for(public_client, patient.user)
    response = signed_in.authorize(prompt="none", id_token_hint=hint)
    assert query(response["Location"])["code"]


@pytest.mark.spec("OIDC Core §3.1.2.1 id_token_hint")
def test_expired_id_token_hint_still_identifies_the_user(signed_in, public_client, patient, monkeypatch):
    hint = _id_token_for(public_client, patient.user)
    later = time.time() + 2 * auth_settings.ID_TOKEN_LIFETIME
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    response = signed_in.authorize(prompt="none", id_token_hint=hint)
    assert query(response["Location"])["code"]


@pytest.mark.spec("OIDC Core §3.1.2.1 id_token_hint")
def test_id_token_hint_for_another_user_asks_to_sign_in(signed_in, other_id_token):
    response = signed_in.authorize(id_token_hint=other_id_token)
    assert response["Location"].startswith("/oauth2/signin?rid=")
    # Signing in as the hinted user completes the request for that user.
    response = signed_in.follow(signed_in.sign_in(response, email="sam@example.org"))
    body = signed_in.token(query(response["Location"])["code"]).json()
    assert id_token_claims(body["id_token"])["sub"] == id_token_claims(other_id_token)["sub"]


@pytest.mark.spec("OIDC Core §3.1.2.6 login_required")
@pytest.mark.parametrize("hint", ["other", "garbage", "access_token"])
def test_id_token_hint_mismatch_with_prompt_none_is_login_required(signed_in, other_id_token, hint):
    value = {"other": other_id_token, "garbage": "not.a.jwt",
             "access_token": signed_in.tokens()["access_token"]}[hint]
    assert_error_redirect(signed_in.authorize(prompt="none", id_token_hint=value), "login_required")


@pytest.mark.spec("OIDC Core §3.1.2.1 login_hint")
def test_login_hint_prefills_the_email_field(flow):
    response = flow.authorize(login_hint="pat@example.org")
    page = flow.client.get(response["Location"])
    assert page.status_code == 200
    assert 'value="pat@example.org"' in page.content.decode()
    assert page.context["email"] == "pat@example.org"


@pytest.mark.spec("OIDC Core §3.1.2.1 login_hint")
def test_login_hint_is_escaped(flow):
    response = flow.authorize(login_hint='"><script>alert(1)</script>')
    html = flow.client.get(response["Location"]).content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&quot;&gt;&lt;script&gt;" in html


# --- pending requests ----------------------------------------------------------------------------


@pytest.mark.spec("RFC 6749 §10.12")
@pytest.mark.parametrize("path", ["/oauth2/signin", "/oauth2/profile", "/oauth2/consent", "/oauth2/authorize/resume"])
def test_pending_requests_belong_to_their_browser(flow, public_client, path):
    response = flow.authorize()
    intruder = Client()
    page = intruder.get(f"{path}?rid={rid(response)}")
    assert_error_page(page, "This sign-in request is no longer valid.")
    # Signing in elsewhere with the stolen rid does not complete the victim's request either.
    post = intruder.post("/oauth2/signin", {"rid": rid(response), "email": "pat@example.org",
                                            "password": "correct horse battery staple"})
    assert_error_page(post, "This sign-in request is no longer valid.")
    assert not Login.objects.exists()


@pytest.mark.spec("RFC 6749 §4.1.2.1")
@pytest.mark.parametrize("path", ["/oauth2/signin", "/oauth2/profile", "/oauth2/consent", "/oauth2/authorize/resume"])
@pytest.mark.parametrize("value", ["", "unknown", "x" * 500])
def test_unknown_rid_is_an_error_page(flow, path, value):
    flow.authorize()
    assert_error_page(flow.client.get(f"{path}?rid={value}"), "This sign-in request is no longer valid.")


@pytest.mark.spec("RFC 6749 §4.1.2.1")
@pytest.mark.parametrize("path", ["/oauth2/signin", "/oauth2/profile", "/oauth2/consent", "/oauth2/authorize/resume"])
def test_expired_rid_is_an_error_page(flow, path):
    response = flow.authorize()
    session = flow.client.session
    session[authorization.SESSION_KEY][rid(response)]["created"] -= authorization.PENDING_SECONDS + 1
    session.save()
    assert_error_page(flow.client.get(f"{path}?rid={rid(response)}"), "This sign-in request is no longer valid.")


@pytest.mark.spec("RFC 6749 §10.5")
def test_a_pending_request_completes_only_once(flow):
    response = flow.sign_in(flow.authorize())
    resume = response["Location"]
    assert query(flow.follow(response)["Location"])["code"]
    assert_error_page(flow.client.get(resume), "This sign-in request is no longer valid.")
    assert Login.objects.count() == 1


@pytest.mark.spec("OWASP ASVS V3 (bounded session state)")
def test_pending_requests_are_bounded_per_session(flow):
    rids = [rid(flow.authorize(state=str(n))) for n in range(authorization.MAX_PENDING + 3)]
    store = pending_requests(flow.client)
    assert len(store) == authorization.MAX_PENDING
    assert set(store) == set(rids[-authorization.MAX_PENDING:])


@pytest.mark.spec("RFC 6749 §4.1.1 state")
def test_several_pending_requests_complete_independently(flow):
    first = flow.authorize(state="one")
    second = flow.authorize(state="two")
    done = flow.follow(flow.sign_in(second))
    assert query(done["Location"])["state"] == "two"
    done = flow.follow(flow.client.get(f"/oauth2/authorize/resume?rid={rid(first)}"))
    assert query(done["Location"])["state"] == "one"


@pytest.mark.spec("RFC 6749 §4.1.2.1")
def test_client_disabled_while_pending_gets_an_error_page(flow, public_client):
    response = flow.authorize()
    _disable_client(public_client)
    assert_error_page(flow.sign_in(response), "Client not found")
    assert not Login.objects.exists()


# --- RFC 9700 §3b items for the authorization endpoint -----------------------------------------------


@pytest.mark.spec("RFC 9700 §2.1 (1: exact redirect URI matching)")
@pytest.mark.parametrize("uri", [
    "https://app.example.org/callback/.", "https://app.example.org/callback%2F", "https://app.example.org/callbacK",
    "https://app.example.org/callback?", "https://app.example.org./callback", "https://app.example.org/call",
    "https://app.example.org/callback/../callback", "https://evil.example.org/?https://app.example.org/callback",
])
def test_rfc9700_exact_redirect_uri_matching(flow, uri):
    assert_error_page(flow.authorize(redirect_uri=uri), "Invalid redirect URI")


@pytest.mark.spec("RFC 9700 §2.6 (2: redirect URI scheme), RFC 8252 §7.3")
def test_rfc9700_loopback_http_redirect_works(client, oauth_project, patient):
    uri = "http://127.0.0.1:8765/callback"
    app = ClientApplicationFactory(project=oauth_project, public=True, redirect_uris=uri)
    flow = Flow(client, app)
    response = flow.follow(flow.sign_in(flow.authorize(redirect_uri=uri)))
    assert response["Location"].startswith(uri + "?")
    # Only the registered form: https for the same host/port is a different URI.
    assert_error_page(flow.authorize(redirect_uri="https://127.0.0.1:8765/callback"), "Invalid redirect URI")


@pytest.mark.spec("RFC 9700 §4.11 (3: no open redirector)")
@pytest.mark.parametrize("overrides", [
    {"client_id": "unknown", "redirect_uri": "https://evil.example.org/cb", "prompt": "none"},
    {"redirect_uri": "https://evil.example.org/cb", "prompt": "none"},
    {"redirect_uri": "https://evil.example.org/cb", "scope": "bogus"},
    {"redirect_uri": "https://evil.example.org/cb", "response_type": "token"},
    {"redirect_uri": "https://evil.example.org/cb", "code_challenge": None},
])
def test_rfc9700_bad_client_or_redirect_uri_never_redirects(flow, overrides):
    response = flow.authorize(**overrides)
    assert response.status_code == 400
    assert not response.has_header("Location")


@pytest.mark.spec("RFC 9700 §4.11 (3: no open redirector)")
def test_rfc9700_errors_redirect_only_to_the_registered_uri(flow):
    for overrides in ({"prompt": "none"}, {"scope": "bogus"}, {"response_type": "token"}, {"max_age": "x"}):
        response = flow.authorize(**overrides)
        assert response["Location"].startswith(REDIRECT_URI + "?"), overrides


@pytest.mark.spec("RFC 9700 §2.1.1 (4: PKCE)")
def test_rfc9700_pkce_challenge_is_bound_to_the_code(flow):
    code = query(flow.redirect())["code"]
    login = Login.objects.get()
    assert login.code_challenge == flow.challenge
    assert login.code_challenge_method == "S256"
    wrong = flow.token(code, code_verifier="x" * 64)
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    missing = flow.token(code, code_verifier=None)
    assert missing.status_code == 400


@pytest.mark.spec("RFC 9700 §4.8.2 (4: PKCE downgrade)")
def test_rfc9700_code_verifier_without_challenge_is_refused(client, oauth_project, patient):
    app = ClientApplicationFactory(project=oauth_project, pkce_optional=True)
    flow = Flow(client, app)
    code = query(flow.redirect(code_challenge=None, code_challenge_method=None))["code"]
    response = post_form(client, "/oauth2/token", {
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
        "client_id": app.client_id, "client_secret": app.plaintext_secret, "code_verifier": flow.verifier})
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.spec("RFC 9700 §4.8.2 (4: PKCE), RFC 8414 §2")
def test_rfc9700_pkce_support_is_published(client, db):
    assert client.get("/.well-known/openid-configuration").json()["code_challenge_methods_supported"] == ["S256"]


@pytest.mark.spec("RFC 9700 §4.2.4 (5: codes single use)")
def test_rfc9700_code_is_single_use_and_replay_revokes(flow):
    code = query(flow.redirect())["code"]
    first = flow.token(code).json()
    replay = flow.token(code)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    info = flow.client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {first['access_token']}")
    assert info.status_code == 401
    assert Login.objects.get().revoked_reason == "authorization_code_replay"


@pytest.mark.spec("RFC 9700 §4.2.4 (5: short-lived codes), RFC 6749 §4.1.2")
def test_rfc9700_code_is_short_lived(flow):
    code = query(flow.redirect())["code"]
    login = Login.objects.get()
    lifetime = (login.code_expires_at - login.created).total_seconds()
    assert 0 < lifetime <= 600
    Login.objects.filter(pk=login.pk).update(code_expires_at=login.created)
    response = flow.token(code)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.spec("RFC 9700 §4.2.4 (5: code bound to client), RFC 6749 §4.1.3")
def test_rfc9700_code_is_bound_to_the_client(flow, oauth_project):
    other = ClientApplicationFactory(project=oauth_project, public=True)
    code = query(flow.redirect())["code"]
    response = flow.token(code, client_id=other.client_id)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert flow.token(code).status_code == 200


@pytest.mark.spec("RFC 9700 §4.4 (8: mix-up), RFC 9207 §2")
@pytest.mark.parametrize("overrides", [{}, {"prompt": "none"}, {"scope": "bogus"}, {"response_type": "token"},
                                       {"request": "x"}, {"aud": "https://x.example.org"}])
def test_rfc9700_iss_on_every_authorization_response(flow, issuer, overrides):
    response = flow.authorize(**overrides) if overrides else flow.follow(flow.sign_in(flow.authorize()))
    assert query(response["Location"])["iss"] == issuer


@pytest.mark.spec("RFC 9700 §4.4 (8: mix-up), RFC 9207 §2")
def test_rfc9700_iss_on_denial(flow, issuer):
    response = flow.sign_in(flow.authorize(scope="openid profile"))
    response = flow.follow(response, approve=False)
    assert response["Location"].startswith("/oauth2/consent?rid=")
    denied = flow.client.post("/oauth2/consent", {"rid": rid(response), "action": "deny"})
    assert query(denied["Location"])["iss"] == issuer


@pytest.mark.spec("RFC 9700 §2.6 (14: no CORS at the authorization endpoint)")
@pytest.mark.parametrize("method", ["GET", "POST", "OPTIONS"])
def test_rfc9700_no_cors_at_the_authorization_endpoint(flow, public_client, method):
    public_client.allowed_origins = "https://app.example.org"
    public_client.save()
    origin = {"HTTP_ORIGIN": "https://app.example.org", "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST"}
    with override_settings(CORS_ALLOWED_ORIGINS=["https://app.example.org"]):
        if method == "GET":
            response = flow.client.get("/oauth2/authorize", flow.params(), **origin)
        elif method == "POST":
            response = post_form(flow.client, "/oauth2/authorize", flow.params(), **origin)
        else:
            response = flow.client.options("/oauth2/authorize", **origin)
        assert not response.has_header("Access-Control-Allow-Origin")
        for path in ("/oauth2/signin", "/oauth2/consent", "/oauth2/profile", "/oauth2/authorize/resume"):
            assert not flow.client.options(path, **origin).has_header("Access-Control-Allow-Origin"), path


@pytest.mark.spec("RFC 9700 §2.6 (14: CORS allowed for metadata)")
@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server",
                                  "/.well-known/jwks.json"])
def test_rfc9700_metadata_allows_cors(client, db, path):
    assert client.get(path, HTTP_ORIGIN="https://any.example.org")["Access-Control-Allow-Origin"] == "*"


@pytest.mark.spec("RFC 9700 §4.7 (15: CSRF on the AS's forms), RFC 6749 §10.12")
@pytest.mark.parametrize("path", ["/oauth2/signin", "/oauth2/profile", "/oauth2/consent"])
def test_rfc9700_forms_need_a_csrf_token(public_client, patient, practitioner, path):
    flow = Flow(Client(enforce_csrf_checks=True), public_client)
    response = flow.authorize(scope="openid profile")
    pending = rid(response)
    if path != "/oauth2/signin":
        page = flow.client.get(response["Location"])
        token = page.context["csrf_token"]
        signed = flow.client.post("/oauth2/signin", {"rid": pending, "email": "pat@example.org",
                                                     "password": "correct horse battery staple",
                                                     "csrfmiddlewaretoken": token})
        assert signed.status_code == 302  # with the token, the same form works
    data = {"rid": pending, "email": "pat@example.org", "password": "correct horse battery staple",
            "membership": str(practitioner.pk), "action": "allow", "scope": ["openid", "profile"]}
    response = flow.client.post(path, data)
    assert response.status_code == 403
    assert not Login.objects.exists()
    assert not Consent.objects.exists()


@pytest.mark.spec("RFC 9700 §4.2.4 (16: Referer leakage)")
@pytest.mark.parametrize(("step", "title"), [("error", "Invalid request"), ("signin", "Sign in"),
                                             ("profile", "Choose a profile"), ("consent", "Allow Public app access?")])
def test_rfc9700_pages_have_no_third_party_resources(flow, practitioner, step, title):
    response = flow.authorize(scope="openid profile")
    if step == "error":
        page = flow.authorize(client_id="nope")
    else:
        if step != "signin":
            response = flow.sign_in(response)
            response = flow.client.get(response["Location"])
            if step == "consent":
                response = flow.client.post("/oauth2/profile", {"rid": rid(response),
                                                                "membership": str(practitioner.pk)})
                response = flow.client.get(response["Location"])
        page = flow.client.get(response["Location"])
    assert page.status_code == (400 if step == "error" else 200)
    html = page.content.decode()
    assert f"<h1>{title}</h1>" in html
    assert '<meta name="referrer" content="same-origin">' in html
    assert page["Referrer-Policy"] == "same-origin"
    urls = re.findall(r'(?:src|href|action)="([^"]*)"', html)
    assert urls
    assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls


@pytest.mark.spec("RFC 9700 §4.12 (17: no 307 after POST)")
def test_rfc9700_no_307_after_post(flow, practitioner):
    statuses = []

    def post(path, data):
        response = flow.client.post(path, data)
        statuses.append(response.status_code)
        return response

    response = flow.post_authorize(scope="openid profile")
    statuses.append(response.status_code)
    response = post("/oauth2/signin", {"rid": rid(response), "email": "pat@example.org",
                                       "password": "correct horse battery staple"})
    response = flow.client.get(response["Location"])
    assert response["Location"].startswith("/oauth2/profile?rid=")
    response = post("/oauth2/profile", {"rid": rid(response), "membership": str(practitioner.pk)})
    response = flow.client.get(response["Location"])
    assert response["Location"].startswith("/oauth2/consent?rid=")
    response = post("/oauth2/consent", {"rid": rid(response), "action": "allow", "scope": ["profile"]})
    response = flow.client.get(response["Location"])
    assert response["Location"].startswith(REDIRECT_URI)
    response = flow.post_authorize(scope="openid email")
    statuses.append(response.status_code)
    assert response["Location"].startswith("/oauth2/profile?rid=")
    response = post("/oauth2/profile", {"rid": rid(response), "membership": str(practitioner.pk)})
    response = flow.client.get(response["Location"])
    response = post("/oauth2/consent", {"rid": rid(response), "action": "deny"})
    assert query(response["Location"])["error"] == "access_denied"
    response = post("/oauth2/signin", {"rid": "expired", "email": "x", "password": "y"})
    assert statuses[:-1] == [302] * 7
    assert statuses[-1] == 400


@pytest.mark.spec("RFC 9700 §4.16 (18: clickjacking)")
@pytest.mark.parametrize("overrides", [{}, {"client_id": "nope"}, {"scope": "bogus"}])
def test_rfc9700_authorization_endpoint_cannot_be_framed(flow, overrides):
    assert_auth_page_headers(flow.authorize(**overrides))
    assert_auth_page_headers(flow.post_authorize(**overrides))
