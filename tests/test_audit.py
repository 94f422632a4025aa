"""The audit trail's write path: :func:`medplum_auth.audit.record`, the request id and the address."""

from __future__ import annotations

import logging

import pytest
from django.test import RequestFactory, override_settings

from medplum_auth import audit, services
from medplum_auth.models import SecurityEvent, SecurityEventType
from tests.factories import ClientApplicationFactory, MembershipFactory, UserFactory


def settings_with(**values):
    from django.conf import settings

    return override_settings(MEDPLUM_AUTH={**settings.MEDPLUM_AUTH, **values})


def test_record_stores_the_actor_the_subject_and_the_request(project, caplog):
    caplog.set_level(logging.INFO, logger="medplum_auth.audit")
    membership = MembershipFactory(project=project, profile_type="Practitioner")
    app = ClientApplicationFactory(project=project)
    request = RequestFactory().get("/", HTTP_USER_AGENT="Browser/1.0\x00", REMOTE_ADDR="203.0.113.9",
                                   HTTP_X_REQUEST_ID="trace-0123456789")
    event = audit.record(SecurityEventType.TOKEN_ISSUED, request=request, project=project, membership=membership,
                         client=app, subject="Login/1", detail={"scopes": ["openid", "bad\x00scope"]})
    row = SecurityEvent.objects.get(pk=event.pk)
    assert row.project_id == project.pk
    assert (row.actor_user, row.actor_membership, row.actor_profile, row.actor_client) == (
        str(membership.user_id), str(membership.pk), membership.profile, app.client_id)
    assert row.actor_display == membership.profile_display  # the user's email would need the user object
    assert (row.remote_addr, row.user_agent, row.request_id) == ("203.0.113.9", "Browser/1.0", "trace-0123456789")
    assert row.detail == {"scopes": ["openid", "badscope"]}
    assert row.outcome == SecurityEvent.Outcome.SUCCESS and row.recorded is not None
    line = next(r.getMessage() for r in caplog.records if r.name == "medplum_auth.audit")
    assert "event=token.issued" in line and "request_id=trace-0123456789" in line


def test_events_are_append_only(project):
    event = audit.record(SecurityEventType.PROJECT_UPDATED, project=project)
    event.reason = "changed"
    with pytest.raises(ValueError, match="append-only"):
        event.save()


def test_without_a_request_the_actor_is_empty(project):
    event = audit.record(SecurityEventType.PROJECT_UPDATED, project=project.pk)
    assert (event.actor_user, event.remote_addr, event.request_id, event.user_agent) == ("", None, "", "")


def test_the_session_user_is_the_actor_when_none_is_given(project):
    user = UserFactory()
    request = RequestFactory().get("/")
    request.user = user
    event = audit.record(SecurityEventType.PROJECT_UPDATED, request=request, project=project)
    assert (event.actor_user, event.actor_display) == (str(user.pk), user.email)


@pytest.mark.parametrize(("incoming", "kept"), [
    ("abc-1234.5678:x_y", True),
    ("short", False),
    ("x" * 65, False),
    ("bad id with spaces", False),
    ("evil\r\nheader", False),
    ("-leading-dash-123", False),
])
def test_incoming_request_id_kept_only_when_valid(incoming, kept):
    request = RequestFactory().get("/", HTTP_X_REQUEST_ID=incoming)
    rid = audit.request_id(request)
    assert (rid == incoming) is kept
    assert len(rid) <= 64 and audit.REQUEST_ID_RE.match(rid)
    assert audit.request_id(request) == rid  # stable for the request


@pytest.mark.parametrize(("header", "meta", "expected"), [
    (None, {"HTTP_X_FORWARDED_FOR": "198.51.100.7"}, "10.0.0.1"),
    ("X-Forwarded-For", {"HTTP_X_FORWARDED_FOR": "1.2.3.4, 198.51.100.7"}, "198.51.100.7"),
    ("X-Forwarded-For", {"HTTP_X_FORWARDED_FOR": "1.2.3.4, garbage"}, "1.2.3.4"),
    ("HTTP_X_REAL_IP", {"HTTP_X_REAL_IP": "2001:db8::1"}, "2001:db8::1"),
    ("X-Real-IP", {"HTTP_X_REAL_IP": "not-an-ip"}, "10.0.0.1"),
    ("X-Real-IP", {}, "10.0.0.1"),
])
def test_remote_address_honours_only_the_trusted_proxy_header(header, meta, expected):
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.1", **meta)
    with settings_with(TRUSTED_PROXY_HEADER=header):
        assert audit.client_address(request) == expected


def test_malformed_remote_addr_is_not_stored(project):
    request = RequestFactory().get("/", REMOTE_ADDR="unix:socket")
    assert audit.record(SecurityEventType.PROJECT_UPDATED, request=request, project=project).remote_addr is None


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration?x=1", "/oauth2/signin?rid=none"])
def test_request_id_header_through_medplum_auth_wsgi(path, db):
    """An API path and a browser path through ``medplum_auth.wsgi``'s application."""
    from django.test import Client

    from medplum_auth.wsgi import get_wsgi_application

    application = get_wsgi_application()
    client = Client()
    client.handler.get_response = None  # make sure the test client is not what answers below
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path.split("?")[0], "QUERY_STRING": path.partition("?")[2],
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "wsgi.url_scheme": "http", "HTTP_HOST": "127.0.0.1",
               "HTTP_X_REQUEST_ID": "upstream-id-42", "wsgi.input": __import__("io").BytesIO(b""),
               "wsgi.errors": __import__("sys").stderr}
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, dict(headers)

    b"".join(application(environ, start_response))
    assert captured["headers"]["X-Request-ID"] == "upstream-id-42", captured


def test_request_id_header_through_the_test_client(client, db):
    response = client.get("/.well-known/openid-configuration")
    assert audit.REQUEST_ID_RE.match(response["X-Request-ID"])


def test_signing_key_rotation_is_recorded(db):
    row = services.rotate_signing_keys()
    event = SecurityEvent.objects.get(event_type="signing_key.rotated", subject=f"SigningKey/{row.kid}")
    assert event.project_id is None and event.detail == {"algorithm": row.algorithm}
    services.rotate_signing_keys()
    services.retire_signing_key(row.kid)
    assert SecurityEvent.objects.filter(event_type="signing_key.retired", subject=f"SigningKey/{row.kid}").exists()


def test_mfa_and_password_reset_codes_are_defined_for_later_callers():
    codes = set(SecurityEventType.values)
    assert {"mfa.enrolled", "mfa.verified", "mfa.failed", "mfa.disabled",
            "password_reset.requested", "password_reset.completed"} <= codes


def test_django_admin_is_read_only_and_shows_the_operator_reason(client, project):
    from django.urls import reverse

    root = UserFactory(is_superuser=True, is_staff=True)
    client.force_login(root)
    event = audit.record(SecurityEventType.SIGNIN_FAILED, project=project, reason="invalid_credentials",
                         operator_reason="unknown_email", actor_display="eve@example.org")
    listing = client.get(reverse("admin:medplum_auth_securityevent_changelist"))
    assert listing.status_code == 200 and b"eve@example.org" in listing.content
    page = client.get(reverse("admin:medplum_auth_securityevent_change", args=[event.pk]))
    assert page.status_code == 200 and b"unknown_email" in page.content
    assert b'name="_save"' not in page.content
    assert client.get(reverse("admin:medplum_auth_securityevent_add")).status_code == 403
    assert client.post(reverse("admin:medplum_auth_securityevent_delete", args=[event.pk]),
                       {"post": "yes"}).status_code == 403
    assert SecurityEvent.objects.filter(pk=event.pk).exists()
