"""A database that stays locked: 503 with ``Retry-After`` in each API's shape, and nothing half-written.

On SQLite a second connection really holds the write lock (``BEGIN IMMEDIATE``) while the
request's busy timeout is cut to 50 ms; on every database a lower function raises the error a
lock timeout raises, in the middle of a transaction that has already written.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from django.db import InterfaceError, OperationalError, connection
from django.test import Client, RequestFactory
from django.urls import resolve

from fhir_api.models import Resource, ResourceVersion
from medplum_auth import audit, database
from medplum_auth.middleware import busy_response
from medplum_auth.models import Login
from tests.factories import DEFAULT_PASSWORD, ClientApplicationFactory, MembershipFactory
from tests.fhir.conftest import mint, seed
from tests.oauth.conftest import basic_auth, obtain_tokens, pkce_pair, post_form

LOCKED = OperationalError("database is locked")


def test_sqlite_options_are_added_to_sqlite_only() -> None:
    sqlite = database.with_sqlite_options({"ENGINE": database.SQLITE_ENGINE, "NAME": "x",
                                           "OPTIONS": {"timeout": 3}})
    assert sqlite["OPTIONS"] == {**database.SQLITE_OPTIONS, "timeout": 3}  # the site's own value wins
    postgres = {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}
    assert database.with_sqlite_options(postgres) is postgres


def test_the_site_settings_use_them() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    options = connection.settings_dict["OPTIONS"]
    assert options["transaction_mode"] == "IMMEDIATE" and options["timeout"] >= 5
    assert "journal_mode=WAL" in options["init_command"]


def test_is_busy() -> None:
    assert database.is_busy(LOCKED)
    assert not database.is_busy(OperationalError("no such table: x"))
    assert not database.is_busy(ValueError("database is locked"))


def test_is_unavailable() -> None:
    assert database.is_unavailable(InterfaceError("connection already closed"))  # Django's own
    assert not database.is_unavailable(OperationalError("no such table: x"))
    assert not database.is_unavailable(LOCKED)
    assert not database.is_unavailable(ValueError("connection already closed"))


@pytest.fixture
def write_lock(transactional_db: Any) -> Any:
    """Another connection holds SQLite's write lock; this one gives up after 50 ms."""
    if connection.vendor != "sqlite":
        pytest.skip("a whole-database write lock is SQLite's")
    connection.ensure_connection()
    connection.connection.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    yield lambda: other.execute("BEGIN IMMEDIATE")
    other.close()
    connection.close()


def assert_busy(response: Any, status: int = 503) -> None:
    assert response.status_code == status, response.content
    assert response["Retry-After"] == str(database.RETRY_AFTER_SECONDS)


@pytest.mark.spec("RFC 6749 §4.1.2.1")
def test_locked_token_request_is_503_temporarily_unavailable(client, confidential_client, write_lock) -> None:
    logins = Login.objects.count()
    write_lock()
    response = post_form(client, "/oauth2/token", {"grant_type": "client_credentials", "scope": "system/*.rs"},
                         HTTP_AUTHORIZATION=basic_auth(confidential_client.client_id,
                                                                   confidential_client.plaintext_secret))
    assert_busy(response)
    assert response.json()["error"] == "temporarily_unavailable" and response["Cache-Control"] == "no-store"
    assert Login.objects.count() == logins


def test_locked_fhir_update_is_503_transient(client, oauth_project, write_lock) -> None:
    doctor = MembershipFactory(project=oauth_project, profile_type="Practitioner")
    token = mint(client=ClientApplicationFactory(project=oauth_project), membership=doctor, scope="user/*.cruds")
    patient = seed(oauth_project, {"resourceType": "Patient", "name": [{"family": "Before"}]})
    write_lock()
    response = client.put(f"/fhir/R4/Patient/{patient['id']}", {"resourceType": "Patient", "id": patient["id"],
                          "name": [{"family": "After"}]}, content_type="application/fhir+json",
                          HTTP_AUTHORIZATION=f"Bearer {token}")
    assert_busy(response)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "transient"
    row = Resource.objects.get(resource_id=patient["id"])
    assert row.version_id == 1 and row.content["name"] == [{"family": "Before"}]
    assert ResourceVersion.objects.filter(resource=row).count() == 1


def test_locked_auth_login_is_503_operation_outcome(client, public_client, patient, write_lock) -> None:
    _verifier, challenge = pkce_pair()
    write_lock()
    response = client.post("/auth/login", {"email": patient.user.email, "password": DEFAULT_PASSWORD,
                                           "clientId": public_client.client_id, "codeChallenge": challenge,
                                           "codeChallengeMethod": "S256"}, content_type="application/json")
    assert_busy(response)
    assert response.json()["issue"][0]["code"] == "transient"


def test_sign_in_pages_answer_an_html_503() -> None:
    request = RequestFactory().post("/oauth2/signin")
    request.resolver_match = resolve("/oauth2/signin")
    response = busy_response(request)
    assert response.status_code == 503 and response["Content-Type"].startswith("text/html")
    assert b"Temporarily unavailable" in response.content


@pytest.mark.spec("RFC 9700 §4.14.2")
def test_refresh_rotation_that_times_out_changes_nothing(client, flow, monkeypatch) -> None:
    """The rotation wrote the login, then the audit insert timed out: rolled back, the old token still works."""
    tokens = obtain_tokens(flow, scope="openid offline_access")
    login = Login.objects.get()
    before = (login.refresh_digest, login.previous_refresh_digest)

    def locked(*args: Any, **kwargs: Any) -> None:
        raise LOCKED

    with monkeypatch.context() as patched:
        patched.setattr(audit, "record_for_login", locked)
        response = post_form(client, "/oauth2/token", {"grant_type": "refresh_token", "client_id":
                             flow.app.client_id, "refresh_token": tokens["refresh_token"]})
    assert_busy(response)
    assert response.json()["error"] == "temporarily_unavailable"
    login.refresh_from_db()
    assert (login.refresh_digest, login.previous_refresh_digest) == before
    retried = post_form(client, "/oauth2/token", {"grant_type": "refresh_token", "client_id": flow.app.client_id,
                                                  "refresh_token": tokens["refresh_token"]})
    assert retried.status_code == 200, retried.content


class FailsOnTheWayOut:
    """A middleware after ``DatabaseBusyMiddleware`` whose database write fails after the view
    (as ``SessionMiddleware`` saving the session does when the database went away mid-request)."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        if request.path == "/oauth2/authorize":
            raise LOCKED
        return response


def test_a_database_error_raised_after_the_view_is_a_503_too(public_client, settings, caplog) -> None:
    """Django turns an exception of a later middleware into its 500 page before any
    ``process_exception`` sees it; the 503 must not depend on where the error was raised."""
    client = Client(raise_request_exception=False)  # as a server: the exception becomes a response
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.oauth.test_database_busy.FailsOnTheWayOut"]
    verifier, challenge = pkce_pair()
    response = client.get("/oauth2/authorize", {
        "response_type": "code", "client_id": public_client.client_id, "redirect_uri": public_client.redirect_uris,
        "scope": "openid", "code_challenge": challenge, "code_challenge_method": "S256"})
    assert_busy(response)
    assert response["Content-Type"].startswith("text/html") and b"Temporarily unavailable" in response.content
    assert "database busy, answered 503: GET /oauth2/authorize" in caplog.text
    other = client.get("/.well-known/openid-configuration")
    assert other.status_code == 200  # only the failing request is answered 503
