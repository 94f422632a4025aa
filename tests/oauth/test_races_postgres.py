"""Concurrency of code redemption and refresh rotation under PostgreSQL row locks (DESIGN §7).

Each request runs in its own thread with its own connection, as two app instances would.
To make the race window certain rather than lucky, the winner is slowed down *inside* its
transaction (after it took the row lock, before it commits): without the lock the loser would
read the row unchanged and both requests would succeed.

Observed behaviour (and what these tests pin):

* code: exactly one 200; the other request waits for the lock, then sees the code redeemed
  and answers ``invalid_grant`` "Token already granted". Like any replay (RFC 6749 §4.1.2) it
  also revokes the login, so the winner's tokens die as well: a client that redeems its code
  twice, even concurrently, loses the whole grant.
* refresh: exactly one 200; the other waits, then no longer finds the token as the current one
  but as the previous one, which is reuse (RFC 9700 §4.14.2): ``invalid_grant`` "Token revoked"
  and the whole family is revoked, including the winner's new tokens. There is no grace period
  (Medplum 5.2 has one); ``@medplum/core`` serialises its refreshes, so it never trips this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections
from django.test import Client
from django.utils import timezone

from medplum_auth import logins
from medplum_auth.models import Login
from medplum_auth.oauth2_validators import MedplumOAuth2Validator
from tests.oauth.conftest import pkce_pair, post_form, userinfo_status

pytestmark = [
    pytest.mark.postgresql(reason="row-lock races (SQLite serialises whole-database writes)"),
    pytest.mark.django_db(transaction=True),
]

WINDOW = 0.3  # seconds the first request holds its row lock


def concurrently(count: int, request: Callable[[Client], Any]) -> list[Any]:
    """Run ``request`` in ``count`` threads released together; each has its own client and connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def worker(index: int) -> None:
        try:
            http = Client()
            barrier.wait(timeout=10)
            results[index] = request(http)
        except Exception as exc:  # re-raised in the test thread below
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a request hung (deadlock?)"
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


def slow_down(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """Sleep before ``method`` (called while the row lock is held) the first time only."""
    original = getattr(MedplumOAuth2Validator, method)
    first = threading.Lock()

    def delayed(self: Any, *args: Any, **kwargs: Any) -> Any:
        if first.acquire(blocking=False):
            time.sleep(WINDOW)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MedplumOAuth2Validator, method, delayed)


@pytest.fixture
def issued_code(public_client, patient) -> tuple[str, str]:
    """A fresh code (as ``/auth/login`` makes them) and its PKCE verifier."""
    verifier, challenge = pkce_pair()
    _login, code = logins.create_login(
        user=patient.user, client=public_client, membership=patient, scope="openid offline_access",
        auth_time=timezone.now(), code_challenge=challenge, code_challenge_method="S256")
    return code, verifier


def redeem(http: Client, app: Any, code: str, verifier: str):
    return post_form(http, "/oauth2/token", {"grant_type": "authorization_code", "code": code,
                                             "client_id": app.client_id, "code_verifier": verifier})


@pytest.mark.spec("RFC 6749 §4.1.2")
@pytest.mark.spec("RFC 9700 §4.2.4")
@pytest.mark.parametrize("window", [True, False], ids=["lock-held", "plain-race"])
def test_concurrent_code_redemption(monkeypatch, public_client, issued_code, window):
    if window:
        slow_down(monkeypatch, "invalidate_authorization_code")
    code, verifier = issued_code
    responses = concurrently(2, lambda http: redeem(http, public_client, code, verifier))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 400], [r.content for r in responses]
    winner = next(r for r in responses if r.status_code == 200)
    loser = next(r for r in responses if r.status_code == 400)
    assert loser.json()["error"] == "invalid_grant"
    assert loser.json()["error_description"] == "Token already granted"
    login = Login.objects.get()
    assert login.code_redeemed_at is not None and login.granted_at is not None
    assert login.revoked_at is not None and login.revoked_reason == "authorization_code_replay"
    assert userinfo_status(Client(), winner.json()["access_token"]) == 401


def test_many_concurrent_redemptions(monkeypatch, public_client, issued_code):
    slow_down(monkeypatch, "invalidate_authorization_code")
    code, verifier = issued_code
    responses = concurrently(5, lambda http: redeem(http, public_client, code, verifier))
    assert sorted(r.status_code for r in responses) == [200, 400, 400, 400, 400]
    assert Login.objects.count() == 1


@pytest.fixture
def refresh_token(public_client, issued_code) -> str:
    code, verifier = issued_code
    response = redeem(Client(), public_client, code, verifier)
    assert response.status_code == 200, response.content
    return response.json()["refresh_token"]


def refresh(http: Client, app: Any, token: str):
    return post_form(http, "/oauth2/token", {"grant_type": "refresh_token", "client_id": app.client_id,
                                             "refresh_token": token})


@pytest.mark.spec("RFC 9700 §4.14.2")
@pytest.mark.parametrize("window", [True, False], ids=["lock-held", "plain-race"])
def test_concurrent_refresh_with_the_same_token(monkeypatch, public_client, refresh_token, window):
    if window:
        slow_down(monkeypatch, "save_bearer_token")
    responses = concurrently(2, lambda http: refresh(http, public_client, refresh_token))

    successes = [r for r in responses if r.status_code == 200]
    failures = [r for r in responses if r.status_code != 200]
    assert len(successes) <= 1, "two rotations of one refresh token"
    assert all(r.status_code == 400 and r.json()["error"] == "invalid_grant" for r in failures)
    login = Login.objects.get()
    if window:
        assert len(successes) == 1
        assert failures[0].json()["error_description"] == "Token revoked"
    if failures:
        # The loser presented a rotated-out token: the family is revoked, the winner's tokens too.
        assert login.revoked_at is not None and login.revoked_reason == "refresh_token_reuse"
        for success in successes:
            assert userinfo_status(Client(), success.json()["access_token"]) == 401
            assert refresh(Client(), public_client, success.json()["refresh_token"]).status_code == 400

