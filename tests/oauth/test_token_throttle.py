"""Throttling of failed client authentication and bad grants at ``/oauth2/token``,
``/oauth2/introspect`` and ``/oauth2/revoke`` (``medplum_auth.throttle``, docs/settings.md)."""

from __future__ import annotations

import base64
import functools
import logging
import types
from typing import Any

import pytest
from django.core.cache import cache, caches
from django.test import Client, override_settings

from medplum_auth import throttle
from medplum_auth.conf import auth_settings
from medplum_auth.models import Login
from tests.factories import ClientApplicationFactory
from tests.oauth.conftest import assert_no_store, assert_oauth_error, basic_auth, post_form

TOKEN, INTROSPECT, REVOKE = "/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"
WINDOW = 300
LIMITS = {"TOKEN_CLIENT_MAX_FAILURES": 3, "TOKEN_IP_MAX_FAILURES": 7, "TOKEN_FAILURE_WINDOW": WINDOW}


@pytest.fixture(autouse=True)
def limits(settings):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, **LIMITS}


@pytest.fixture
def clock(monkeypatch):
    """The throttle's clock (only its own): 10 s into a window, movable."""
    now = [(1_900_000_000 // WINDOW) * WINDOW + 10.0]
    monkeypatch.setattr(throttle, "time", types.SimpleNamespace(time=lambda: now[0]))
    return now


def credentials(app: Any, secret: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"HTTP_AUTHORIZATION": basic_auth(app.client_id, app.plaintext_secret if secret is None else secret),
            **extra}


def client_credentials(http: Any, app: Any, secret: str | None = None, **extra: Any):
    return post_form(http, TOKEN, {"grant_type": "client_credentials", "scope": "openid system/*.rs"},
                     **credentials(app, secret, **extra))


def assert_throttled(response, retry_after: int | None = None) -> None:
    body = assert_oauth_error(response, "temporarily_unavailable", status=429)
    seconds = int(response["Retry-After"])
    assert body["error_description"] == f"Too many failed requests; retry after {seconds} seconds."
    assert 1 <= seconds <= WINDOW
    if retry_after is not None:
        assert seconds == retry_after
    assert_no_store(response)
    assert "WWW-Authenticate" not in response


@pytest.mark.spec("RFC 6749 §10.10 (credential guessing)")
def test_exactly_the_limit_of_bad_secrets_then_429_even_for_the_right_secret(client, confidential_client, clock):
    for _ in range(LIMITS["TOKEN_CLIENT_MAX_FAILURES"]):
        response = client_credentials(client, confidential_client, secret="wrong")
        assert_oauth_error(response, "invalid_client", status=401)
        assert response["WWW-Authenticate"].startswith("Basic ")
    response = client_credentials(client, confidential_client)
    assert_throttled(response, retry_after=WINDOW - 10)
    assert not Login.objects.exists()  # refused before anything was processed


def test_retry_after_counts_down_and_the_window_expires(client, confidential_client, clock):
    for _ in range(3):
        client_credentials(client, confidential_client, secret="wrong")
    clock[0] += 100.5
    assert_throttled(client_credentials(client, confidential_client), retry_after=190)  # ceil(189.5)
    clock[0] += 189.4
    assert_throttled(client_credentials(client, confidential_client), retry_after=1)
    clock[0] += 0.2  # the next window: a fresh count
    assert client_credentials(client, confidential_client).status_code == 200
    for _ in range(3):
        assert client_credentials(client, confidential_client, secret="wrong").status_code == 401
    assert client_credentials(client, confidential_client).status_code == 429


def test_throttled_requests_are_not_counted_again(client, confidential_client, oauth_project, clock):
    for _ in range(3):
        client_credentials(client, confidential_client, secret="wrong")
    for _ in range(20):  # far beyond the per-IP limit of 7, but refused, not counted
        assert client_credentials(client, confidential_client, secret="wrong").status_code == 429
    other = ClientApplicationFactory(project=oauth_project)
    assert client_credentials(client, other).status_code == 200


def test_a_good_client_is_unaffected_by_another_clients_flood_from_the_same_ip(client, oauth_project, clock):
    noisy, good = ClientApplicationFactory(project=oauth_project), ClientApplicationFactory(project=oauth_project)
    for _ in range(50):
        client_credentials(client, noisy, secret="wrong")
    assert client_credentials(client, noisy).status_code == 429
    for _ in range(20):
        assert client_credentials(client, good).status_code == 200
    # and the good client's own failures have their own count
    assert client_credentials(client, good, secret="wrong").status_code == 401


def test_the_per_ip_limit_catches_a_source_cycling_through_client_ids(client, confidential_client, clock):
    statuses = [client_credentials(client, types.SimpleNamespace(client_id=f"guess-{n}", plaintext_secret="x"))
                .status_code for n in range(LIMITS["TOKEN_IP_MAX_FAILURES"])]
    assert statuses == [401] * LIMITS["TOKEN_IP_MAX_FAILURES"]
    assert_throttled(client_credentials(client, confidential_client))  # any client from this address
    assert client_credentials(client, confidential_client, REMOTE_ADDR="192.0.2.9").status_code == 200


def test_the_same_client_from_another_address_is_not_locked_out(client, confidential_client, clock):
    """Client ids are public: a flood naming one must not lock the real client out everywhere."""
    for _ in range(10):
        client_credentials(client, confidential_client, secret="wrong", REMOTE_ADDR="203.0.113.66")
    assert client_credentials(client, confidential_client, REMOTE_ADDR="203.0.113.66").status_code == 429
    assert client_credentials(client, confidential_client, REMOTE_ADDR="192.0.2.10").status_code == 200


def test_successes_are_never_counted(client, confidential_client, clock):
    for _ in range(25):
        assert client_credentials(client, confidential_client).status_code == 200
    for _ in range(3):
        assert client_credentials(client, confidential_client, secret="wrong").status_code == 401
    assert client_credentials(client, confidential_client).status_code == 429


@pytest.fixture
def cache_calls(monkeypatch) -> list[str]:
    """Every call the request makes on the default cache, by method name (one ``get_many`` is one
    round trip on Redis, MGET; the in-memory backend implements it with ``get``, not counted)."""
    backend, calls, depth = caches["default"], [], [0]

    def recorded(name: str, original: Any, *args: Any, **kwargs: Any) -> Any:
        if not depth[0]:
            calls.append(name)
        depth[0] += 1
        try:
            return original(*args, **kwargs)
        finally:
            depth[0] -= 1

    for name in ("get", "get_many", "set", "set_many", "add", "incr", "decr", "delete", "delete_many",
                 "has_key", "touch", "get_or_set"):
        monkeypatch.setattr(backend, name, functools.partial(recorded, name, getattr(backend, name)))
    return calls


def test_a_successful_token_request_costs_one_cache_read(client, confidential_client, cache_calls):
    client_credentials(client, confidential_client)  # warm: the signing key is cached in process
    cache_calls.clear()
    response = client_credentials(client, confidential_client)
    assert response.status_code == 200, response.content
    assert cache_calls == ["get_many"]


def test_a_failure_writes_its_counters(client, confidential_client, cache_calls):
    cache_calls.clear()
    assert client_credentials(client, confidential_client, secret="wrong").status_code == 401
    assert cache_calls == ["get_many", "add", "incr", "add", "incr"]  # per client and IP, per IP


@pytest.mark.spec("RFC 6749 §5.2 invalid_grant")
def test_bad_grants_are_counted(client, public_client, clock):
    data = {"grant_type": "authorization_code", "client_id": public_client.client_id,
            "redirect_uri": public_client.redirect_uris, "code_verifier": "v" * 43}
    for n in range(3):
        assert_oauth_error(post_form(client, TOKEN, {**data, "code": f"bogus-{n}"}), "invalid_grant")
    assert_throttled(post_form(client, TOKEN, {**data, "code": "bogus-x"}))
    refresh = {"grant_type": "refresh_token", "client_id": public_client.client_id, "refresh_token": "r"}
    assert_throttled(post_form(client, TOKEN, refresh))


def test_other_errors_are_not_counted(client, confidential_client, clock):
    for _ in range(12):
        assert_oauth_error(post_form(client, TOKEN, {"grant_type": "password"}, **credentials(confidential_client)),
                           "unsupported_grant_type")
        assert_oauth_error(post_form(client, TOKEN, {"grant_type": "client_credentials", "scope": "superuser"},
                                     **credentials(confidential_client)), "invalid_scope")
        assert_oauth_error(client.post(TOKEN, "{}", content_type="application/json"), "invalid_request")
    assert client_credentials(client, confidential_client).status_code == 200


def test_introspect_and_revoke_are_throttled_too(client, confidential_client, oauth_project, clock):
    for _ in range(3):
        response = post_form(client, INTROSPECT, {"token": "t"}, **credentials(confidential_client, "wrong"))
        assert_oauth_error(response, "invalid_client", status=401)
    assert_throttled(post_form(client, INTROSPECT, {"token": "t"}, **credentials(confidential_client)))
    assert_throttled(post_form(client, REVOKE, {"token": "t"}, **credentials(confidential_client)))
    assert_throttled(client_credentials(client, confidential_client))  # one count for all three endpoints

    other = ClientApplicationFactory(project=oauth_project)
    for _ in range(3):
        assert post_form(client, REVOKE, {"token": "t", "client_id": other.client_id,
                                          "client_secret": "wrong"}).status_code == 401
    assert_throttled(post_form(client, REVOKE, {"token": "t", "client_id": other.client_id,
                                                "client_secret": other.plaintext_secret}))


def test_a_successful_introspection_costs_one_cache_read(client, confidential_client, cache_calls):
    cache_calls.clear()
    response = post_form(client, INTROSPECT, {"token": "not-a-token"}, **credentials(confidential_client))
    assert response.status_code == 200 and response.json() == {"active": False}
    assert cache_calls == ["get_many"]


def test_the_state_is_in_djangos_cache_under_hashed_keys(confidential_client, clock):
    """Two clients (as two app instances sharing REDIS_URL would) see one count; the cache holds it."""
    first, second = Client(), Client()
    for http in (first, second, first):
        assert client_credentials(http, confidential_client, secret="wrong").status_code == 401
    assert client_credentials(second, confidential_client).status_code == 429
    counter = throttle.Counter("token-failures-client", (confidential_client.client_id, "127.0.0.1"),
                               3, WINDOW)
    key = counter.key(clock[0])
    assert cache.get(key) == 3
    assert confidential_client.client_id not in key and "127.0.0.1" not in key
    cache.clear()  # nothing else remembers the failures
    assert client_credentials(first, confidential_client).status_code == 200


def test_the_state_is_shared_through_a_shared_cache_backend(confidential_client, tmp_path, clock):
    """With a cache other processes can reach (here a file cache; Redis in production), a second
    backend instance sees the first one's count, as another app instance would."""
    shared = {"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                          "LOCATION": str(tmp_path)}}
    with override_settings(CACHES=shared):
        for _ in range(3):
            client_credentials(Client(), confidential_client, secret="wrong")
        from django.core.cache.backends.filebased import FileBasedCache

        other_instance = FileBasedCache(str(tmp_path), {})
        counter = throttle.Counter("token-failures-client", (confidential_client.client_id, "127.0.0.1"),
                                   3, WINDOW)
        assert other_instance.get(counter.key(clock[0])) == 3
        assert client_credentials(Client(), confidential_client).status_code == 429


def test_reaching_a_limit_is_logged_once(client, confidential_client, caplog, clock):
    with caplog.at_level(logging.WARNING, logger="medplum_auth.audit"):
        for _ in range(6):
            client_credentials(client, confidential_client, secret="wrong")
    lines = [r.getMessage() for r in caplog.records if "throttled" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "counter=token-failures-client" in lines[0] and "error=invalid_client" in lines[0]
    assert f"client_id='{confidential_client.client_id}'" in lines[0]


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@override_settings(MEDPLUM_AUTH={"ISSUER": "http://testserver"})  # the defaults: 10 per client, 100 per IP
def test_a_flood_of_bad_secrets_is_the_documented_error_never_a_500(client, confidential_client):
    assert auth_settings.TOKEN_CLIENT_MAX_FAILURES == 10
    hostile = [_basic(b"\x00:\x00"), _basic("é\u2028:x".encode()), _basic(b"x" * 5000 + b":y"), "Basic !!!",
               "Basic " + "A" * 3, _basic(b"no-colon"), _basic(b"%00%ff:%zz"), _basic("\ud800:x".encode(
                   "utf-8", "surrogatepass"))]
    flood = hostile + [_basic(f"{confidential_client.client_id}:wrong-{n}".encode()) for n in range(30)]
    statuses = []
    for header in flood:
        response = post_form(client, TOKEN, {"grant_type": "client_credentials"}, HTTP_AUTHORIZATION=header)
        statuses.append(response.status_code)
        assert response.json()["error"] in ("invalid_client", "temporarily_unavailable"), response.content
    assert statuses == [401] * (len(hostile) + 10) + [429] * 20
    for path in (INTROSPECT, REVOKE):
        response = post_form(client, path, {"token": "t", "client_id": "\x00", "client_secret": "\x00"})
        assert_oauth_error(response, "invalid_client", status=401)  # 38 failures: under the 100 per IP
    assert_throttled(client_credentials(client, confidential_client))


def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(client, confidential_client, clock, settings):
    """All requests through a proxy share its REMOTE_ADDR; with TRUSTED_PROXY_HEADER the per-client
    and per-address counters use the client's own address, so one flood does not lock out all."""
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "TRUSTED_PROXY_HEADER": "X-Forwarded-For"}
    flood = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.5"}
    other = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    for _ in range(LIMITS["TOKEN_CLIENT_MAX_FAILURES"]):
        assert client_credentials(client, confidential_client, secret="wrong", **flood).status_code == 401
    assert_throttled(client_credentials(client, confidential_client, **flood))
    response = client_credentials(client, confidential_client, **other)
    assert response.status_code == 200, response.content
    assert response.json()["token_type"] == "Bearer"
