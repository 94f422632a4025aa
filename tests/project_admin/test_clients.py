"""Clients: Create New Client with its validation messages, the secret shown once, rotation, status, delete."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from medplum_auth.access import client_policy_rule
from medplum_auth.conf import auth_settings
from medplum_auth.models import ClientApplication, Login
from medplum_auth.secrets import DIGEST_PREFIX, verify_client_secret
from medplum_auth.validators import validate_access_token_lifetime, validate_origin, validate_redirect_uri
from tests.factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory

from .conftest import shown_secret, text, url

pytestmark = pytest.mark.django_db


def validator_message(func: Any, *args: Any) -> str:
    try:
        func(*args)
    except ValidationError as exc:
        return exc.messages[0]
    raise AssertionError(f"{args!r} passed the validator")


def create(pa: Any, project: Any, **data: Any) -> Any:
    form = {"name": "Scheduling app", "description": "", "redirect_uris": "https://app.example.org/callback",
            "access_policy": "", "client_type": "confidential", **data}
    return pa.post(url("client-create", project), form)


def test_create_client_form_has_labels_and_advanced_section(pa, project, patient_policy):
    page = text(pa.get(url("client-create", project)))
    for field in ("name", "description", "redirect_uris", "access_policy", "pkce_optional", "access_token_lifetime",
                  "refresh_token_lifetime", "allowed_origins", "post_logout_redirect_uris", "launch_uri", "jwks_uri"):
        assert f'for="id_{field}"' in page, field
    assert "<summary>Advanced</summary>" in page
    assert "<details class=\"advanced\">" in page  # closed until an advanced field has an error
    assert "Warning: not recommended" in page  # the PKCE-optional warning
    assert patient_policy.name in page


@pytest.mark.parametrize("uri", ["http://example.org/cb", "/cb", "https://a.example/cb#x",
                                 "https://*.example.org/cb", "https://user:pw@example.org/cb"])
def test_bad_redirect_uri_shows_the_validators_message(pa, project, uri):
    response = create(pa, project, name="Keep me", redirect_uris=f"https://ok.example.org/cb\n{uri}")
    assert response.status_code == 400
    expected = validator_message(validate_redirect_uri, uri)
    assert response.context["form"].errors["redirect_uris"] == [expected]
    page = text(response)
    assert html.escape(expected) in page
    assert "Nothing was saved" in page
    assert 'value="Keep me"' in page and "https://ok.example.org/cb" in page  # input kept
    assert not ClientApplication.objects.filter(project=project).exists()


def test_redirect_uris_on_one_line_are_refused_not_split(pa, project):
    line = "https://app.example.org/callback https://app.example.org/other"
    response = create(pa, project, redirect_uris=line)
    assert response.status_code == 400
    message = response.context["form"].errors["redirect_uris"][0]
    assert message == validator_message(validate_redirect_uri, line)
    assert "contains a space. Enter one per line" in message
    assert html.escape(message) in text(response)
    assert not ClientApplication.objects.filter(project=project).exists()
    assert create(pa, project, redirect_uris=line.replace(" ", "\r\n")).status_code == 303
    assert ClientApplication.objects.get(project=project).redirect_uri_list == line.split()


def test_every_bad_redirect_uri_is_reported_at_once(pa, project):
    bad = ["http://a.example/cb", "https://b.example/cb#f"]
    response = create(pa, project, redirect_uris="\n".join(bad))
    assert response.context["form"].errors["redirect_uris"] == [
        validator_message(validate_redirect_uri, uri) for uri in bad]


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("name", "", "This field is required."),
    ("client_type", "", "This field is required."),
    ("post_logout_redirect_uris", "http://x.example/out",
     lambda: validator_message(validate_redirect_uri, "http://x.example/out", "Post-logout redirect URI")),
    ("allowed_origins", "https://app.example.org/path",
     lambda: validator_message(validate_origin, "https://app.example.org/path")),
    ("launch_uri", "http://ehr.example/launch",
     lambda: validator_message(validate_redirect_uri, "http://ehr.example/launch", "Launch URI")),
    ("jwks_uri", "http://keys.example/jwks",
     lambda: validator_message(validate_redirect_uri, "http://keys.example/jwks", "JWKS URI")),
    ("access_token_lifetime", "-5", "Ensure this value is greater than or equal to 0."),
    ("access_token_lifetime", "300", lambda: validator_message(validate_access_token_lifetime, 300)),
    ("access_policy", "00000000-0000-0000-0000-000000000000",
     "Select a valid choice. That choice is not one of the available choices."),
])
def test_create_client_validation_messages(pa, project, field, value, expected):
    response = create(pa, project, **{field: value})
    assert response.status_code == 400
    message = expected() if callable(expected) else expected
    assert response.context["form"].errors[field] == [message]
    assert html.escape(message) in text(response)
    if field in ("post_logout_redirect_uris", "allowed_origins", "launch_uri", "jwks_uri", "access_token_lifetime"):
        assert response.context["advanced_open"] is True
        assert '<details class="advanced" open>' in text(response)
    assert not ClientApplication.objects.filter(project=project).exists()


def test_public_client_cannot_make_pkce_optional(pa, project):
    response = create(pa, project, client_type="public", pkce_optional="on")
    assert response.context["form"].errors["pkce_optional"] == ["Public clients must use PKCE."]


def test_another_projects_policy_is_not_a_choice(pa, project, other_project):
    foreign = AccessPolicyFactory(project=other_project)
    assert foreign.name not in text(pa.get(url("client-create", project)))
    response = create(pa, project, access_policy=str(foreign.pk))
    assert "access_policy" in response.context["form"].errors


def test_create_confidential_client_shows_id_secret_and_authorize_url_once(pa, project, patient_policy):
    response = create(pa, project, access_policy=str(patient_policy.pk), description="Books visits",
                      redirect_uris="https://app.example.org/callback\nhttps://app.example.org/other",
                      access_token_lifetime="600")
    assert response.status_code == 303
    client = ClientApplication.objects.get(project=project)
    assert (client.name, client.access_policy, client.access_token_lifetime) == ("Scheduling app", patient_policy, 600)
    assert response["Location"].startswith(url("client", project, client.pk) + "secret/")

    page = pa.get(response["Location"])
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    body = text(page)
    secret = shown_secret(page)
    assert verify_client_secret(secret, client.client_secret)
    assert f'value="{client.client_id}"' in body
    assert body.count('data-copy="') >= 3  # client id, secret, authorize URL (+ verifier)
    assert "Client “Scheduling app” created." in body  # the confirming message
    authorize = page.context["authorize"]
    parts = urlsplit(authorize["url"])
    assert f"{parts.scheme}://{parts.netloc}" == auth_settings.ISSUER
    assert parts.path == "/oauth2/authorize"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query["client_id"] == client.client_id
    assert query["redirect_uri"] == "https://app.example.org/callback"
    assert query["code_challenge_method"] == "S256" and query["response_type"] == "code"
    assert html.escape(authorize["url"]) in body

    again = pa.get(response["Location"])
    assert again.status_code == 200
    assert secret not in text(again)
    assert "already shown" in text(again)


def test_secret_waits_in_the_session_encrypted(pa, project):
    response = create(pa, project)
    client = ClientApplication.objects.get(project=project)
    session = dict(pa.session.items())
    assert json.dumps(session).count(client.client_secret) == 0
    secret = shown_secret(pa.get(response["Location"]))
    assert secret not in json.dumps(session)
    assert not [k for k in pa.session.keys() if k.startswith("medplum_auth.once.")]  # noqa: SIM118


def test_secret_page_is_only_for_its_own_client(pa, project):
    response = create(pa, project)
    first = ClientApplication.objects.get(project=project)
    token = response["Location"].rstrip("/").rsplit("/", 1)[-1]
    second = ClientApplicationFactory(project=project)
    page = pa.get(url("client-secret", project, second.pk, token))
    assert "already shown" in text(page)
    assert not any(verify_client_secret(v, first.client_secret) for v in text(page).split('"'))
    assert pa.post(url("client-secret", project, first.pk, token)).status_code == 405


def test_public_client_has_no_secret(pa, project):
    response = create(pa, project, client_type="public")
    client = ClientApplication.objects.get(project=project)
    assert client.client_secret == ""
    page = pa.get(response["Location"])
    assert 'id="client-secret"' not in text(page)
    assert "public client" in text(page)
    assert page.context["authorize"]["url"]


def secrets_and_digests(client: ClientApplication, *plaintexts: str) -> list[str]:
    values = [p for p in plaintexts if p]
    for digest in (client.client_secret, client.retiring_secret):
        if digest:
            values += [digest, digest.removeprefix(DIGEST_PREFIX)]
    return values


def every_page(pa: Any, project: Any, client: ClientApplication, policy: Any, member: Any) -> list[str]:
    return [url("clients", project), url("client", project, client.pk), url("client-retire", project, client.pk),
            url("client-delete", project, client.pk), url("policies", project), url("policy", project, policy.pk),
            url("preview", project) + f"?subject=client:{client.pk}", url("members", project),
            url("member", project, member.pk), url("sessions", project)]


def test_no_secret_or_digest_on_any_later_page(pa, project, patient_policy, admin_member):
    first_page = create(pa, project, access_policy=str(patient_policy.pk))
    client = ClientApplication.objects.get(project=project)
    secret = shown_secret(pa.get(first_page["Location"]))
    rotated = pa.post(url("client-rotate", project, client.pk))
    assert rotated.status_code == 303
    new_secret = shown_secret(pa.get(rotated["Location"]))
    client.refresh_from_db()
    assert client.retiring_secret
    forbidden = secrets_and_digests(client, secret, new_secret)
    pages = [*every_page(pa, project, client, patient_policy, admin_member), first_page["Location"],
             rotated["Location"]]
    for page in pages:
        body = text(pa.get(page))
        for value in forbidden:
            assert value not in body, (page, value[:12])


def test_rotate_keeps_the_old_secret_until_retired(pa, project):
    client = ClientApplicationFactory(project=project)
    old = client.plaintext_secret
    response = pa.post(url("client-rotate", project, client.pk))
    page = pa.get(response["Location"])
    new = shown_secret(page)
    assert "keeps working until you retire it" in text(page)
    client.refresh_from_db()
    assert client.verify_secret(old) and client.verify_secret(new)
    detail = text(pa.get(url("client", project, client.pk)))
    assert "Retire old secret" in detail and "The previous secret still works" in detail
    confirm = pa.get(url("client-retire", project, client.pk))
    assert confirm.status_code == 200 and "stops working at once" in text(confirm)
    done = pa.post(url("client-retire", project, client.pk), follow=True)
    assert "Old secret retired" in text(done)
    client.refresh_from_db()
    assert not client.verify_secret(old) and client.verify_secret(new)
    again = pa.post(url("client-retire", project, client.pk), follow=True)
    assert "no old secret to retire" in text(again)


def test_public_client_cannot_rotate(pa, project):
    client = ClientApplicationFactory(project=project, public=True)
    response = pa.post(url("client-rotate", project, client.pk), follow=True)
    assert "Public clients have no secret." in text(response)


def test_disable_revokes_sessions_and_enable(pa, project):
    client = ClientApplicationFactory(project=project)
    member = MembershipFactory(project=project)
    from django.utils import timezone

    login = Login.objects.create(user=member.user, client=client, project=project, membership=member,
                                 auth_time=timezone.now(), granted_at=timezone.now())
    response = pa.post(url("client-status", project, client.pk), {"status": "off"}, follow=True)
    assert "Client disabled" in text(response)
    client.refresh_from_db()
    login.refresh_from_db()
    assert client.status == "off" and login.revoked_at is not None
    assert "Enable" in text(response)
    response = pa.post(url("client-status", project, client.pk), {"status": "active"}, follow=True)
    assert "Client enabled." in text(response)
    client.refresh_from_db()
    assert client.status == "active"
    bad = pa.post(url("client-status", project, client.pk), {"status": "bogus"}, follow=True)
    assert "Status must be one of" in text(bad)


def test_disabled_client_gets_invalid_client_at_once(pa, project):
    import base64

    client = ClientApplicationFactory(project=project)
    auth = "Basic " + base64.b64encode(f"{client.client_id}:{client.plaintext_secret}".encode()).decode()

    def token() -> Any:
        return Client().post("/oauth2/token", "grant_type=client_credentials",
                             content_type="application/x-www-form-urlencoded", HTTP_AUTHORIZATION=auth)

    assert token().status_code == 200
    pa.post(url("client-status", project, client.pk), {"status": "off"})
    refused = token()
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    pa.post(url("client-status", project, client.pk), {"status": "active"})
    assert token().status_code == 200


def test_access_token_lifetime_error_names_the_sdk_grace_period(pa, project):
    response = create(pa, project, access_token_lifetime="120")
    message = response.context["form"].errors["access_token_lifetime"][0]
    assert "refreshGracePeriod (300 s)" in message and "@medplum/core" in message
    assert create(pa, project, access_token_lifetime="301").status_code == 303


def test_a_short_lifetime_stored_earlier_does_not_block_other_edits(pa, project):
    client = ClientApplicationFactory(project=project, name="App", access_token_lifetime=60)
    form = {"name": "Renamed", "description": "", "redirect_uris": "https://app.example.org/callback",
            "access_policy": "", "authorization_grant_type": "authorization-code", "access_token_lifetime": "60",
            "refresh_token_lifetime": "", "post_logout_redirect_uris": "", "allowed_origins": "",
            "launch_uri": "", "jwks_uri": "", "jwks": "null", "sign_in_text": ""}
    assert pa.post(url("client", project, client.pk), form).status_code == 303
    changed = pa.post(url("client", project, client.pk), {**form, "access_token_lifetime": "90"})
    assert changed.status_code == 400 and "access_token_lifetime" in changed.context["form"].errors
    client.refresh_from_db()
    assert (client.name, client.access_token_lifetime) == ("Renamed", 60)


def test_delete_asks_then_deletes(pa, project):
    client = ClientApplicationFactory(project=project, name="Old app")
    confirm = pa.get(url("client-delete", project, client.pk))
    assert "Delete “Old app”?" in text(confirm) and "cannot be undone" in text(confirm)
    assert ClientApplication.objects.filter(pk=client.pk).exists()
    response = pa.post(url("client-delete", project, client.pk))
    assert response.status_code == 303 and response["Location"] == url("clients", project)
    assert not ClientApplication.objects.filter(pk=client.pk).exists()
    assert "Client “Old app” deleted" in text(pa.get(response["Location"]))


def test_edit_client_saves_and_keeps_input_on_error(pa, project, patient_policy):
    client = ClientApplicationFactory(project=project, name="App")
    digest = client.client_secret
    form = {"name": "Renamed", "description": "d", "redirect_uris": "https://new.example.org/cb",
            "access_policy": str(patient_policy.pk), "authorization_grant_type": "authorization-code",
            "access_token_lifetime": "", "refresh_token_lifetime": "", "post_logout_redirect_uris": "",
            "allowed_origins": "", "launch_uri": "", "jwks_uri": "", "jwks": "null", "sign_in_text": ""}
    bad = pa.post(url("client", project, client.pk), {**form, "redirect_uris": "http://new.example.org/cb"})
    assert bad.status_code == 400
    assert bad.context["form"].errors["redirect_uris"] == [
        validator_message(validate_redirect_uri, "http://new.example.org/cb")]
    assert 'value="Renamed"' in text(bad)
    client.refresh_from_db()
    assert client.name == "App" and client.redirect_uris == "https://app.example.org/callback"
    good = pa.post(url("client", project, client.pk), form)
    assert good.status_code == 303
    assert "Client “Renamed” saved." in text(pa.get(good["Location"]))
    client.refresh_from_db()
    assert (client.name, client.redirect_uris, client.access_policy) == (
        "Renamed", "https://new.example.org/cb", patient_policy)
    assert client.client_secret == digest
    assert "status" not in bad.context["form"].fields  # status has its own buttons


def test_client_policy_rule_reads_the_same_on_the_form_the_client_page_the_list_and_the_readme(
        pa, project, patient_policy):
    """One sentence (``medplum_auth.access.client_policy_rule``) wherever a client's policy is set or shown."""
    rule = client_policy_rule()
    assert "restricts the app for every user who signs in through it" in rule
    assert "for the client itself (client_credentials)" in rule
    create_page = pa.get(url("client-create", project))
    assert create_page.context["form"].fields["access_policy"].help_text == rule
    assert rule in text(create_page)  # Django renders help texts as they are
    client = ClientApplicationFactory(project=project, name="Plain app")
    detail = pa.get(url("client", project, client.pk))
    assert detail.context["form"].fields["access_policy"].help_text == rule
    assert html.escape(rule) in text(detail)  # the sentence beside the policy (#client-policy-rule)
    assert "none — users keep their own access; <strong>full access</strong> when the client acts for itself" in text(
        pa.get(url("clients", project)))
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert ("access policies that limit what data a client may reach — for every user who signs in through it "
            "and for the client itself") in readme


def test_client_list_columns(pa, project, patient_policy):
    ClientApplicationFactory(project=project, name="Listed app", access_policy=patient_policy)
    page = text(pa.get(url("clients", project)))
    for column in ("Name", "Client ID", "Type", "Redirect URIs", "Access policy", "Status", "Created"):
        assert f'<th scope="col">{column}</th>' in page
    assert "Listed app" in page and "https://app.example.org/callback" in page and patient_policy.name in page
    assert "Create New Client" in page


@pytest.mark.parametrize(("field", "label"), [
    ("dpop_bound_access_tokens", "Require DPoP"),
    ("require_pushed_authorization_requests", "Require pushed authorization requests"),
])
def test_client_flag_is_shown_and_saved(pa, project, field, label):
    client = ClientApplicationFactory(project=project, name="App")
    page = text(pa.get(url("client", project, client.pk)))
    assert f'name="{field}"' in page and label in page
    form = {"name": "App", "description": "", "redirect_uris": "https://app.example.org/callback",
            "access_policy": "", "authorization_grant_type": "authorization-code", "access_token_lifetime": "",
            "refresh_token_lifetime": "", "post_logout_redirect_uris": "", "allowed_origins": "",
            "launch_uri": "", "jwks_uri": "", "jwks": "null", "sign_in_text": "", field: "on"}
    assert pa.post(url("client", project, client.pk), form).status_code == 303
    client.refresh_from_db()
    assert getattr(client, field) is True
    form.pop(field)
    assert pa.post(url("client", project, client.pk), form).status_code == 303
    client.refresh_from_db()
    assert getattr(client, field) is False
