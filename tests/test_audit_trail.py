"""Every security event, caused by its real action, stored and readable as a FHIR AuditEvent.

Each test performs the action through its endpoint (or the service the pages and CLI call) and
then finds the event both as a ``SecurityEvent`` row and through ``GET /fhir/R4/AuditEvent`` with
a project admin's token. A patient's token and another project's admin see none of it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import secrets
import time
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from medplum_auth import services
from medplum_auth.models import Login, SecurityEvent, SigningKey
from tests.factories import DEFAULT_PASSWORD, ClientApplicationFactory, MembershipFactory, ProjectFactory, UserFactory
from tests.fhir.conftest import FHIR_JSON, mint
from tests.oauth.conftest import REDIRECT_URI, Flow, basic_auth, post_form, query

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic(db):
    return ProjectFactory(name="Audit clinic")


@pytest.fixture
def app(clinic):
    return ClientApplicationFactory(project=clinic, public=True, redirect_uris=REDIRECT_URI, name="Patient app")


@pytest.fixture
def backend(clinic):
    return ClientApplicationFactory(project=clinic, redirect_uris=REDIRECT_URI, name="Backend")


@pytest.fixture
def patient(clinic):
    user = UserFactory(email="pat@example.org", username="pat@example.org")
    return MembershipFactory(project=clinic, user=user, profile_type="Patient", profile_display="Pat Lee")


@pytest.fixture
def admin(clinic):
    user = UserFactory(email="boss@example.org", username="boss@example.org")
    return MembershipFactory(project=clinic, user=user, profile_type="Practitioner", admin=True,
                             profile_display="Ada Admin")


@pytest.fixture
def admin_api(client, admin, backend):
    return AuditApi(client, mint(client=backend, membership=admin, scope="openid"))


@pytest.fixture
def flow(client, app, patient):
    return Flow(client, app)


class AuditApi:
    def __init__(self, http: Client, token: str):
        self.http, self.token = http, token

    def get(self, path: str = "", params: dict[str, Any] | None = None, **extra: Any):
        return self.http.get(f"/fhir/R4/AuditEvent{path}", params or {}, HTTP_ACCEPT=FHIR_JSON,
                             HTTP_AUTHORIZATION=f"Bearer {self.token}", **extra)

    def events(self, **params: Any) -> list[dict[str, Any]]:
        response = self.get("", {"_count": 100, **params})
        assert response.status_code == 200, response.content
        bundle = response.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        return [entry["resource"] for entry in bundle["entry"]]

    def one(self, subtype: str, **params: Any) -> dict[str, Any]:
        found = self.events(subtype=subtype, **params)
        assert len(found) == 1, [e["subtype"][0]["code"] for e in found]
        resource = found[0]
        assert self.get(f"/{resource['id']}").json() == resource  # read gives the same resource
        return resource


def who(resource: dict[str, Any]) -> list[str]:
    return [agent["who"].get("reference", agent["who"].get("display")) for agent in resource["agent"]]


def entity(resource: dict[str, Any]) -> str:
    return resource["entity"][0]["what"].get("reference", "")


def detail(resource: dict[str, Any], name: str) -> str | None:
    return next((d["valueString"] for d in resource["entity"][0].get("detail", []) if d["type"] == name), None)


def json_login(http: Client, app: Any, email: str, password: str, **extra: Any):
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    body = {"email": email, "password": password, "clientId": app.client_id, "scope": "openid offline_access",
            "codeChallenge": challenge, "codeChallengeMethod": "S256"}
    return http.post("/auth/login", json.dumps(body), content_type="application/json", **extra), verifier


# --- sign-in -------------------------------------------------------------------------------------


def test_sign_in_success_through_the_json_api(client, app, patient, admin_api):
    response, _ = json_login(client, app, "pat@example.org", DEFAULT_PASSWORD, HTTP_USER_AGENT="UA/1",
                             REMOTE_ADDR="198.51.100.4", HTTP_X_REQUEST_ID="req-signin-0001")
    assert response.status_code == 200, response.content
    assert response["X-Request-ID"] == "req-signin-0001"
    row = SecurityEvent.objects.get(event_type="signin.succeeded")
    assert (row.actor_user, row.actor_client, row.project_id) == (str(patient.user_id), app.client_id, app.project_id)
    assert (row.remote_addr, row.user_agent, row.request_id) == ("198.51.100.4", "UA/1", "req-signin-0001")
    resource = admin_api.one("signin.succeeded")
    assert resource["type"]["code"] == "110114" and resource["outcome"] == "0"
    assert resource["agent"][0]["network"] == {"address": "198.51.100.4", "type": "2"}
    assert resource["agent"][0]["altId"] == str(patient.user_id)
    assert detail(resource, "request-id") == "req-signin-0001"
    assert who(resource)[-1] == f"ClientApplication/{app.client_id}"


@pytest.mark.parametrize(("email", "operator_reason"), [
    ("pat@example.org", "wrong_password"),
    ("nobody@example.org", "unknown_email"),
])
def test_sign_in_failure_does_not_tell_whether_the_account_exists(client, app, patient, admin_api, email,
                                                                  operator_reason):
    response, _ = json_login(client, app, email, "wrong password!")
    assert response.status_code == 400
    row = SecurityEvent.objects.get(event_type="signin.failed")
    assert (row.reason, row.operator_reason, row.actor_user) == ("invalid_credentials", operator_reason, "")
    assert row.outcome == SecurityEvent.Outcome.MINOR_FAILURE
    assert "wrong password!" not in json.dumps([row.detail, row.reason, row.actor_display, row.subject_display])
    resource = admin_api.one("signin.failed")
    assert resource["outcome"] == "4" and resource["outcomeDesc"] == "invalid_credentials"
    assert who(resource)[0] == email and "altId" not in resource["agent"][0]
    assert operator_reason not in json.dumps(resource)


def test_sign_in_page_success_and_failure(client, flow, patient, admin_api):
    page = flow.authorize()
    failed = flow.sign_in(page, password="nope")
    assert failed.status_code == 400
    flow.sign_in(flow.authorize())
    assert [e["subtype"][0]["code"] for e in admin_api.events(_sort="date", type="110114")][:2] == [
        "signin.failed", "signin.succeeded"]


# --- authorization, tokens -----------------------------------------------------------------------


def test_authorization_granted_and_token_issued(flow, patient, app, admin_api):
    code = flow.code(scope="openid offline_access")
    granted = admin_api.one("authorization.granted")
    login = Login.objects.get(client=app)
    assert entity(granted) == f"Login/{login.pk}"
    assert json.loads(detail(granted, "scopes")) == ["openid", "offline_access"]
    assert who(granted)[:1] == [patient.profile]
    response = flow.token(code)
    assert response.status_code == 200
    issued = admin_api.one("token.issued")
    assert entity(issued) == f"Login/{login.pk}" and detail(issued, "grant") == "authorization_code"
    assert response.json()["access_token"] not in json.dumps(issued)
    assert response.json()["refresh_token"] not in json.dumps(admin_api.events())


def test_authorization_denied_by_the_user(client, flow, admin_api):
    response = flow.sign_in(flow.authorize(scope="openid patient/*.rs"))
    while response["Location"].startswith("/oauth2/authorize/resume"):
        response = client.get(response["Location"])
    assert response["Location"].startswith("/oauth2/consent")
    denied = client.post("/oauth2/consent", {"rid": query(response["Location"])["rid"], "action": "deny"})
    assert query(denied["Location"])["error"] == "access_denied"
    resource = admin_api.one("authorization.denied")
    assert resource["outcome"] == "4" and resource["outcomeDesc"] == "user_denied"
    assert entity(resource) == f"ClientApplication/{flow.app.client_id}"


def test_client_credentials_token_issued(client, backend, admin_api):
    response = post_form(client, "/oauth2/token", {"grant_type": "client_credentials", "scope": "system/*.rs"},
                         HTTP_AUTHORIZATION=basic_auth(backend.client_id, backend.plaintext_secret))
    assert response.status_code == 200, response.content
    resource = admin_api.one("token.issued", agent=f"ClientApplication/{backend.client_id}")
    assert who(resource) == [f"ClientApplication/{backend.client_id}"]
    assert resource["agent"][0]["requestor"] is True and detail(resource, "grant") == "client_credentials"


def refresh(http: Client, app: Any, token: str):
    return post_form(http, "/oauth2/token", {"grant_type": "refresh_token", "refresh_token": token,
                                             "client_id": app.client_id})


def test_refresh_revocation_and_reuse(client, flow, app, admin_api):
    first = flow.token(flow.code(scope="openid offline_access")).json()
    second = refresh(client, app, first["refresh_token"])
    assert second.status_code == 200
    refreshed = admin_api.one("token.refreshed")
    assert detail(refreshed, "grant") == "refresh_token"

    replay = refresh(client, app, first["refresh_token"])  # the rotated-out token: reuse
    assert replay.json()["error"] == "invalid_grant"
    reuse = admin_api.one("token.refresh_reuse")
    assert reuse["type"]["code"] == "110113" and reuse["outcome"] == "8"
    revoked = admin_api.one("token.revoked")
    assert revoked["outcomeDesc"] == "refresh_token_reuse" and entity(revoked) == entity(reuse)


def test_revocation_endpoint(client, flow, app, admin_api):
    tokens = flow.token(flow.code(scope="openid offline_access")).json()
    response = post_form(client, "/oauth2/revoke", {"token": tokens["access_token"], "client_id": app.client_id})
    assert response.status_code == 200
    resource = admin_api.one("token.revoked")
    assert resource["outcomeDesc"] == "revocation_endpoint"


# --- administration ------------------------------------------------------------------------------


@pytest.fixture
def pa(admin) -> Client:
    http = Client()
    http.force_login(admin.user)
    return http


def pa_url(name: str, project: Any, *args: Any) -> str:
    return reverse(f"project_admin:{name}", args=[project.pk, *args])


def test_client_lifecycle_in_the_project_admin(pa, clinic, admin, admin_api):
    created = pa.post(pa_url("client-create", clinic), {
        "name": "Scheduling app", "description": "", "redirect_uris": "https://app.example.org/callback",
        "access_policy": "", "client_type": "confidential"})
    assert created.status_code == 303
    client = clinic.clients.get(name="Scheduling app")
    resource = admin_api.one("client.created")
    assert entity(resource) == client.reference and resource["action"] == "C"
    assert who(resource) == [f"User/{admin.user_id}"]
    assert resource["agent"][0]["who"]["display"] == "boss@example.org"

    assert pa.post(pa_url("client-rotate", clinic, client.pk)).status_code == 303
    assert entity(admin_api.one("client.secret_rotated")) == client.reference
    assert pa.post(pa_url("client-status", clinic, client.pk), {"status": "off"}).status_code == 303
    updated = admin_api.one("client.updated")
    assert json.loads(detail(updated, "fields")) == ["status"]
    assert pa.post(pa_url("client-delete", clinic, client.pk)).status_code == 303
    assert admin_api.one("client.deleted")["action"] == "D"


def test_client_update_service_lists_fields_not_values(clinic, backend, admin_api):
    services.update_client(backend, redirect_uris=["https://new.example.org/cb"])
    resource = admin_api.one("client.updated")
    assert json.loads(detail(resource, "fields")) == ["redirect_uris"]
    assert "new.example.org" not in json.dumps(resource)


def test_access_policy_changes(pa, clinic, admin_api):
    policy = services.create_access_policy(clinic, "Readers", [{"resourceType": "Patient"}])
    assert entity(admin_api.one("access_policy.created")) == policy.reference
    services.update_access_policy(policy, rules=[{"resourceType": "Observation"}])
    assert admin_api.one("access_policy.updated")["action"] == "U"
    services.set_default_access_policy(clinic, "Patient", policy)
    assert admin_api.one("access_policy.default_changed")["type"]["code"] == "110136"


def test_membership_invited_changed_removed(pa, clinic, admin_api):
    invitation = services.invite_member(clinic, "new@example.org", profile_type="Practitioner",
                                        first_name="New", last_name="Member", password="A-very-long-passw0rd!")
    membership = invitation.membership
    invited = admin_api.one("membership.invited")
    assert entity(invited) == membership.reference
    assert "A-very-long-passw0rd!" not in json.dumps(invited)
    response = pa.post(pa_url("member-remove", clinic, membership.pk))
    assert response.status_code == 303
    removed = admin_api.one("membership.removed")
    assert entity(removed) == membership.reference and removed["action"] == "D"


def test_membership_changed(clinic, patient, admin_api):
    services.update_membership(patient, admin=True)
    resource = admin_api.one("membership.changed")
    assert json.loads(detail(resource, "fields")) == ["admin"] and entity(resource) == patient.reference


def test_signing_key_rotation_is_a_system_event_seen_by_superuser_admins(client, clinic, backend, admin_api):
    call_command("medplum_rotate_keys", stdout=io.StringIO())
    assert admin_api.events(subtype="signing_key.rotated") == []  # no project: not the project admin's
    root = UserFactory(is_superuser=True, is_staff=True)
    membership = MembershipFactory(project=clinic, user=root, profile_type="Practitioner", admin=True)
    su_api = AuditApi(client, mint(client=backend, membership=membership))
    newest = su_api.events(subtype="signing_key.rotated")[0]  # (migrate made the first key)
    kid = SigningKey.objects.get(status="active").kid
    assert entity(newest) == f"SigningKey/{kid}" and newest["action"] == "U"
    assert su_api.get(f"/{newest['id']}").json() == newest


# --- isolation -----------------------------------------------------------------------------------


@pytest.fixture
def some_events(flow, admin_api):
    flow.token(flow.code(scope="openid offline_access"))
    events = admin_api.events()
    assert len(events) >= 3
    return events


def test_a_patient_token_sees_no_events(client, some_events, patient, app):
    api = AuditApi(client, mint(client=app, membership=patient, scope="openid patient/*.rs"))
    search = api.get("")
    assert search.status_code == 403 and search.json()["resourceType"] == "OperationOutcome"
    assert api.get(f"/{some_events[0]['id']}").status_code == 403


def test_a_client_credentials_token_sees_no_events(client, some_events, backend):
    api = AuditApi(client, mint(client=backend, scope="system/*.rs"))
    assert api.get("").status_code == 403


def test_an_inactive_admin_sees_no_events(client, some_events, admin, backend):
    token = mint(client=backend, membership=admin)
    admin.active = False
    admin.save()
    assert AuditApi(client, token).get("").status_code == 401


def test_another_projects_admin_sees_none(client, some_events):
    other = ProjectFactory(name="Elsewhere")
    other_admin = MembershipFactory(project=other, profile_type="Practitioner", admin=True)
    api = AuditApi(client, mint(client=ClientApplicationFactory(project=other), membership=other_admin))
    assert api.events() == []
    response = api.get(f"/{some_events[0]['id']}")
    assert response.status_code == 404 and response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("path", ["/fhir/R4/AuditEvent", "/fhir/R4/AuditEvent/1"])
def test_options_allows_only_reads(client, admin_api, path):
    """RFC 9110 §9.3.7 / §10.2.1: Allow lists what the resource answers (issue 13, schemathesis)."""
    response = client.options(path, HTTP_AUTHORIZATION=f"Bearer {admin_api.token}")
    assert response.status_code == 200 and response["Allow"] == "GET, HEAD, OPTIONS", response.headers


def test_no_token_is_401(client, some_events):
    assert client.get("/fhir/R4/AuditEvent").status_code == 401


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_never_writable(client, admin_api, some_events, method):
    path = "/fhir/R4/AuditEvent" + ("" if method == "post" else f"/{some_events[0]['id']}")
    response = getattr(client, method)(path, json.dumps({"resourceType": "AuditEvent"}), content_type=FHIR_JSON,
                                       HTTP_AUTHORIZATION=f"Bearer {admin_api.token}")
    assert response.status_code == 405, response.content
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response["Allow"] == "GET, HEAD, OPTIONS"  # issue 13 (schemathesis): it listed the writes too
    assert SecurityEvent.objects.count() == len(some_events) + SecurityEvent.objects.filter(project=None).count()


# --- search --------------------------------------------------------------------------------------


def test_search_parameters(flow, app, patient, admin_api):
    flow.token(flow.code(scope="openid offline_access"))
    everything = admin_api.events()
    newest_first = [e["recorded"] for e in everything]
    assert newest_first == sorted(newest_first, reverse=True)
    assert [e["id"] for e in admin_api.events(_sort="date")] == [e["id"] for e in reversed(everything)]
    login = Login.objects.get(client=app)
    assert {e["subtype"][0]["code"] for e in admin_api.events(entity=f"Login/{login.pk}")} == {
        "authorization.granted", "token.issued"}
    assert {e["subtype"][0]["code"] for e in admin_api.events(agent=patient.profile)} == {
        "authorization.granted", "token.issued"}
    assert len(admin_api.events(agent=f"User/{patient.user_id}")) == 3  # the sign-in too
    assert admin_api.events(outcome="4") == []
    assert len(admin_api.events(outcome="0")) == len(everything)
    assert len(admin_api.events(type="http://dicom.nema.org/resources/ontology/DCM|110114")) == len(everything)
    assert admin_api.events(type="other-system|110114") == []
    assert len(admin_api.events(subtype="token.issued,authorization.granted")) == 2
    day = everything[0]["recorded"][:10]
    assert len(admin_api.events(date=day)) == len(everything)
    assert len(admin_api.events(date=f"ge{day}")) == len(everything)
    assert admin_api.events(date=f"lt{day}") == []
    assert admin_api.events(date=["ge2000-01-01", "lt2000-02-01"]) == []
    assert len(admin_api.events(_id=everything[1]["id"])) == 1


def test_paging(flow, admin_api):
    flow.token(flow.code())
    for _ in range(2):  # signed in already
        flow.token(query(flow.redirect())["code"])
    response = admin_api.get("", {"_count": 2, "subtype": "token.issued"})
    bundle = response.json()
    assert bundle["total"] == 3 and len(bundle["entry"]) == 2
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert "subtype=token.issued" in links["next"] and "_offset=2" in links["next"]
    second = admin_api.get("", {"_count": 2, "_offset": 2, "subtype": "token.issued"}).json()
    assert len(second["entry"]) == 1 and "next" not in {link["relation"] for link in second["link"]}
    ids = [e["resource"]["id"] for e in bundle["entry"] + second["entry"]]
    assert len(set(ids)) == 3
    assert admin_api.get("", {"_summary": "count", "subtype": "token.issued"}).json()["total"] == 3


@pytest.mark.parametrize("params", [
    {"date": "yesterday"}, {"date": "ge2026-13-01"}, {"date": "x" * 500}, {"outcome": "3"}, {"unknown": "1"},
    {"subtype:missing": "true"}, {"_sort": "recorded"}, {"_count": "-1"}, {"_offset": "100000"},
    {"agent": "User/\x00"}, {"entity": "a" * 300}, {"_summary": "data"}, {"date": "ge\x00"},
])
def test_bad_search_input_is_a_400(admin_api, params):
    response = admin_api.get("", params)
    assert response.status_code == 400, response.content
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("resource_id", ["abc", "99999999999999999999", "1.5", "-1"])
def test_unknown_ids_are_404(admin_api, resource_id):
    assert admin_api.get(f"/{resource_id}").status_code == 404


def test_capability_statement_lists_audit_event_read_only(client):
    statement = client.get("/fhir/R4/metadata").json()
    audit = next(r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent")
    assert [i["code"] for i in audit["interaction"]] == ["read", "search-type"]
    assert {p["name"] for p in audit["searchParam"]} >= {"date", "type", "subtype", "agent", "entity", "outcome"}


def test_audit_event_is_valid_r4(flow, admin_api):
    from fhir.resources.R4B.auditevent import AuditEvent

    flow.token(flow.code())
    for resource in admin_api.events():
        AuditEvent.model_validate(resource)




# --- second factors and passwords --------------------------------------------------------------------


def test_second_factor_events(client, app, patient, admin_api):
    import pyotp

    from medplum_auth import mfa

    secret = mfa.start_totp(patient.user).secret
    mfa.confirm_totp(patient.user, pyotp.TOTP(secret).now())  # (the service: no event; the views record)
    response, _ = json_login(client, app, "pat@example.org", DEFAULT_PASSWORD)
    login = response.json()["login"]
    wrong = client.post("/auth/mfa/verify", json.dumps({"login": login, "token": "000000"}),
                        content_type="application/json")
    assert wrong.status_code == 400
    right = client.post("/auth/mfa/verify", json.dumps(
        {"login": login, "token": pyotp.TOTP(secret).at(time.time(), counter_offset=1)}),
        content_type="application/json")
    assert right.status_code == 200, right.content
    failed, verified = admin_api.one("mfa.failed"), admin_api.one("mfa.verified")
    assert failed["outcome"] == "4" and verified["outcome"] == "0"
    assert entity(verified) == f"Login/{login}"
    assert f"Patient/{patient.profile_id}" in who(verified)


def test_password_reset_events(client, patient, admin_api):
    from django.core import mail

    client.post("/auth/resetpassword", json.dumps({"email": "pat@example.org"}), content_type="application/json")
    assert len(mail.outbox) == 1
    requested = admin_api.one("password_reset.requested")
    assert entity(requested) == f"User/{patient.user_id}"


def test_a_patient_sees_no_second_factor_events(client, app, patient, backend):
    from medplum_auth import services as svc

    svc.reset_mfa(patient)
    patient_api = AuditApi(client, mint(client=app, membership=patient, scope="openid"))
    assert patient_api.get().status_code == 403
