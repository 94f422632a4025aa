"""``medplum_auth.wsgi``: Django's handler with the site's middleware for every request (API
responses keep the security headers and CORS and set no cookie), discovery documents from memory."""

from __future__ import annotations

import io
import json
import sys
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import override_settings

from medplum_auth import wsgi
from medplum_auth.services import create_client

from .factories import ProjectFactory

pytestmark = pytest.mark.django_db

ORIGIN = "https://app.example.org"


@pytest.fixture(scope="module")
def application():
    return wsgi.get_wsgi_application()


@pytest.fixture(autouse=True)
def _keep_test_transaction():
    # As Django's test client does: the handler's request signals would otherwise close the
    # connection that holds the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def call(application, method: str, path: str, body: bytes = b"", **headers: str):
    path, _, query = path.partition("?")
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "testserver",
               "SERVER_PORT": "80", "HTTP_HOST": "testserver", "wsgi.url_scheme": "http",
               "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
               "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1"}
    for name, value in headers.items():
        key = name.upper()
        environ[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
    started = {}

    def start_response(status, response_headers, exc_info=None):
        started["status"], started["headers"] = status, response_headers

    content = b"".join(application(environ, start_response))
    return int(started["status"][:3]), started["headers"], content


def header(headers, name):
    values = [v for k, v in headers if k.lower() == name.lower()]
    return values[-1] if values else None


def test_every_request_goes_through_djangos_handler_and_the_sites_middleware(application):
    """No second middleware stack (it needed settings.MIDDLEWARE swapped while loading): one
    ordinary WSGIHandler; the API views need no session middleware."""
    from django.core.handlers.wsgi import WSGIHandler

    assert type(application.site) is WSGIHandler
    assert not hasattr(application, "api")
    assert "django.contrib.sessions.middleware.SessionMiddleware" in settings.MIDDLEWARE


def test_api_response_keeps_security_headers_and_cors_and_sets_no_cookie(application):
    with override_settings(CORS_ALLOWED_ORIGINS=[ORIGIN]):
        status, headers, content = call(application, "GET", "/.well-known/openid-configuration", origin=ORIGIN)
    assert status == 200
    assert json.loads(content)["token_endpoint"].endswith("/oauth2/token")
    assert header(headers, "X-Content-Type-Options") == "nosniff"
    assert header(headers, "X-Frame-Options") == "DENY"
    assert header(headers, "Referrer-Policy") == "same-origin"
    assert header(headers, "Access-Control-Allow-Origin") == ORIGIN  # the CORS middleware ran
    assert header(headers, "Set-Cookie") is None
    assert "Cookie" not in (header(headers, "Vary") or "")


def test_token_endpoint_through_the_api_stack(application):
    client, secret = create_client(ProjectFactory(), "Backend", public=False,
                                   redirect_uris=["https://app.example.org/cb"])
    body = urlencode({"grant_type": "client_credentials", "client_id": client.client_id,
                      "client_secret": secret}).encode()
    with override_settings(CORS_ALLOWED_ORIGINS=[ORIGIN]):
        status, headers, content = call(application, "POST", "/oauth2/token", body,
                                        content_type="application/x-www-form-urlencoded", origin=ORIGIN)
        preflight = call(application, "OPTIONS", "/oauth2/token", origin=ORIGIN,
                         access_control_request_method="POST")
    assert status == 200, content
    token = json.loads(content)
    assert token["token_type"] == "Bearer" and token["access_token"].count(".") == 2
    assert header(headers, "Cache-Control") == "no-store"
    assert header(headers, "Access-Control-Allow-Origin") == ORIGIN
    assert header(headers, "Set-Cookie") is None
    assert preflight[0] == 200 and header(preflight[1], "Access-Control-Allow-Origin") == ORIGIN

    status, headers, content = call(application, "GET", "/oauth2/userinfo",
                                    authorization=f"Bearer {token['access_token']}")
    assert status == 200 and json.loads(content)["sub"] == client.client_id
    assert header(headers, "Set-Cookie") is None


def test_browser_paths_keep_the_full_stack(application):
    status, headers, content = call(application, "GET", "/oauth2/signin")
    # The sign-in page without a pending request: an HTML error page, from the full stack.
    assert header(headers, "X-Frame-Options") == "DENY"
    assert header(headers, "X-Content-Type-Options") == "nosniff"
    status, headers, _ = call(application, "GET", "/project-admin/")
    assert status == 302
    assert "Cookie" in (header(headers, "Vary") or "")  # the session middleware ran


def test_api_paths_still_check_the_host(application):
    status, _headers, _content = call(application, "GET", "/oauth2/userinfo", host="evil.example")
    assert status == 400
    status, _headers, _content = call(application, "GET", "/.well-known/openid-configuration", host="evil.example")
    assert status == 400


class Counter:
    def __init__(self):
        self.requests = 0

    def __call__(self, **kwargs):
        self.requests += 1


@pytest.fixture
def django_requests():
    counter = Counter()
    request_started.connect(counter)
    yield counter
    request_started.disconnect(counter)


@pytest.fixture
def fresh_application():
    return wsgi.get_wsgi_application()  # its own, empty document cache


def test_discovery_documents_are_replayed_from_memory(fresh_application, django_requests):
    first = call(fresh_application, "GET", "/.well-known/openid-configuration")
    second = call(fresh_application, "GET", "/.well-known/openid-configuration")
    assert django_requests.requests == 1
    assert first == second and first[0] == 200
    assert header(second[1], "X-Content-Type-Options") == "nosniff"
    assert header(second[1], "Cache-Control") == "public, max-age=300"
    call(fresh_application, "GET", "/fhir/R4/.well-known/smart-configuration")
    call(fresh_application, "GET", "/fhir/R4/.well-known/smart-configuration")
    assert django_requests.requests == 2


def test_document_cache_keys_and_limits(fresh_application, django_requests, monkeypatch):
    path = "/.well-known/openid-configuration"
    with override_settings(CORS_ALLOWED_ORIGINS=[ORIGIN]):
        plain = call(fresh_application, "GET", path)
        with_origin = call(fresh_application, "GET", path, origin=ORIGIN)
        other_origin = call(fresh_application, "GET", path, origin="https://other.example")
    assert django_requests.requests == 3  # the Origin is part of the key: CORS answers differ
    assert header(with_origin[1], "Access-Control-Allow-Origin") == ORIGIN
    assert header(other_origin[1], "Access-Control-Allow-Origin") == "*"
    assert header(plain[1], "Access-Control-Allow-Origin") == "*"

    assert call(fresh_application, "GET", path, host="evil.example")[0] == 400
    assert call(fresh_application, "GET", path, host="evil.example")[0] == 400
    assert django_requests.requests == 5  # errors are never kept

    call(fresh_application, "GET", path + "?x=1")
    call(fresh_application, "HEAD", path)
    call(fresh_application, "GET", "/.well-known/jwks.json")
    call(fresh_application, "GET", "/.well-known/jwks.json")
    assert django_requests.requests == 9  # query strings, HEAD and the JWK Set always reach Django

    start = wsgi.time.monotonic()
    monkeypatch.setattr(wsgi.time, "monotonic", lambda: start + wsgi.DOCUMENT_CACHE_SECONDS + 1)
    assert call(fresh_application, "GET", path)[0] == 200
    assert django_requests.requests == 10  # expired: produced again
