"""Two app instances of one deployment on one database (DESIGN §7: stateless instances).

The scale-out test runs them on PostgreSQL and a shared Redis cache behind a round-robin proxy
(``examples/cluster/proxy.py``, as ``python3 dev.py cluster`` does): every request of the flow
lands on the other instance than the one before, a key rotation, the token throttle, DPoP
nonces and replay detection and a logout hold across them, and killing one instance mid-load
costs no request on the other.

A browser-like client signs in and gets a code on instance A; the code is traded, the token
used and refreshed across instances A and B, and a replayed refresh token on B revokes the
family on both. Everything is plain HTTP against two gunicorn processes; signing keys,
logins and sessions live in the shared database.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest

from examples.cluster.proxy import RoundRobinProxy
from tests.e2e.conftest import REDIRECT_URI, gunicorn, unavailable
from tests.oauth.dpop_client import DPoPKey

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True),
              pytest.mark.spec("DESIGN §7 stateless app instances")]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Browser:
    """Cookies, no automatic redirects: each hop is asserted by the test."""

    def __init__(self) -> None:
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()), _NoRedirect())

    def request(self, url: str, data: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        body = urllib.parse.urlencode(data, doseq=True).encode() if data is not None else None
        req = urllib.request.Request(url, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=20) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


def absolute(base: str, location: str) -> str:
    return location if location.startswith("http") else base + location


def sign_in_for_code(browser: Browser, base: str, client_id: str, email: str, password: str) -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid offline_access", "state": "s-1", "code_challenge": challenge,
        "code_challenge_method": "S256"})
    status, headers, _ = browser.request(f"{base}/oauth2/authorize?{query}")
    assert status == 302 and "/oauth2/signin?rid=" in headers["Location"]
    signin = absolute(base, headers["Location"])
    _, _, page = browser.request(signin)
    rid = urllib.parse.parse_qs(urllib.parse.urlsplit(signin).query)["rid"][0]
    status, headers, _ = browser.request(f"{base}/oauth2/signin", {
        "csrfmiddlewaretoken": csrf_token(page), "rid": rid, "email": email, "password": password})
    assert status == 302, headers
    location = headers["Location"]
    for _hop in range(5):
        if location.startswith(REDIRECT_URI):
            break
        url = absolute(base, location)
        status, headers, page = browser.request(url)
        if "/oauth2/consent" in url and status == 200:
            status, headers, _ = browser.request(f"{base}/oauth2/consent", {
                "csrfmiddlewaretoken": csrf_token(page), "rid": rid, "action": "allow",
                "scope": ["openid", "offline_access"]})
        assert status == 302, (url, status)
        location = headers["Location"]
    params = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    assert location.startswith(REDIRECT_URI) and params["state"] == ["s-1"], location
    return params["code"][0], verifier


def post_token(base: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
    status, _headers, body = Browser().request(f"{base}/oauth2/token", data)
    return status, json.loads(body)


def userinfo_status(base: str, access_token: str) -> int:
    status, _, _ = Browser().request(f"{base}/oauth2/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    return status


def test_sign_in_on_one_instance_use_tokens_on_the_other(tmp_path: Any) -> None:
    from medplum_auth import services
    from medplum_auth.models import Login

    services.ensure_signing_key()
    project = services.create_project("Two instances")
    client, _ = services.create_client(project, "Public app", redirect_uris=[REDIRECT_URI], public=True)
    services.invite_member(project, "pat@two.example", profile_type="Patient", first_name="Pat", last_name="Two",
                           password="Two-Instances-Pass-2026!")

    with gunicorn(tmp_path / "a.log") as a, gunicorn(tmp_path / "b.log", issuer=a.url) as b:
        code, verifier = sign_in_for_code(Browser(), a.url, client.client_id, "pat@two.example",
                                          "Two-Instances-Pass-2026!")
        status, tokens = post_token(b.url, {"grant_type": "authorization_code", "code": code,
                                            "client_id": client.client_id, "code_verifier": verifier,
                                            "redirect_uri": REDIRECT_URI})
        assert status == 200, tokens
        assert userinfo_status(a.url, tokens["access_token"]) == 200
        assert userinfo_status(b.url, tokens["access_token"]) == 200

        status, refreshed = post_token(a.url, {"grant_type": "refresh_token", "client_id": client.client_id,
                                               "refresh_token": tokens["refresh_token"]})
        assert status == 200 and refreshed["refresh_token"] != tokens["refresh_token"]
        assert userinfo_status(b.url, refreshed["access_token"]) == 200

        # The rotated-out refresh token replayed on the other instance revokes the family everywhere.
        status, replay = post_token(b.url, {"grant_type": "refresh_token", "client_id": client.client_id,
                                            "refresh_token": tokens["refresh_token"]})
        assert (status, replay["error"]) == (400, "invalid_grant")
        assert userinfo_status(a.url, refreshed["access_token"]) == 401
        assert userinfo_status(b.url, refreshed["access_token"]) == 401
    assert Login.objects.get().revoked_reason == "refresh_token_reuse"


# --- Scale-out: two instances on PostgreSQL + Redis behind a round-robin proxy ---------------------

@contextlib.contextmanager
def redis_server(log: Path) -> Iterator[str]:
    """Debian's ``redis-server`` on a free port, no persistence, until the block ends."""
    binary = shutil.which("redis-server")
    if not binary:
        unavailable("redis-server not found (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(log, "w") as log_file:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"], stdout=log_file, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"redis-server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def kill_instance(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL gunicorn's master and its workers at once (a crashed host, not a graceful stop)."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    proc.kill()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    proc.wait()


def kid(token: str) -> str:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==="))["kid"]


def jwks_kids(base: str) -> set[str]:
    _, _, body = Browser().request(f"{base}/.well-known/jwks.json")
    return {key["kid"] for key in json.loads(body)["keys"]}


def through(proxy: RoundRobinProxy, url: str, data: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, int, Any]:
    """``(status, upstream index, JSON body)`` of one request through the proxy."""
    status, response_headers, body = Browser().request(f"{proxy.url}{url}", data, headers)
    return status, int(response_headers["X-Upstream"]), json.loads(body)


def signed_in_tokens(proxy: RoundRobinProxy, client_id: str) -> tuple[int, dict[str, Any]]:
    """Sign in through the proxy and trade the code there: ``(instance that traded it, tokens)``."""
    code, verifier = sign_in_for_code(Browser(), proxy.url, client_id, "pat@scale.example", "Scale-Out-Pass-2026!")
    status, on, tokens = through(proxy, "/oauth2/token", {
        "grant_type": "authorization_code", "code": code, "client_id": client_id, "code_verifier": verifier,
        "redirect_uri": REDIRECT_URI})
    assert status == 200, tokens
    return on, tokens


def test_round_robin_on_postgres_and_redis(tmp_path: Path) -> None:
    from django.db import connection

    from medplum_auth import services, tokens
    from medplum_auth.conf import auth_settings
    from medplum_auth.models import Login

    if connection.vendor != "postgresql":
        pytest.skip("several instances need PostgreSQL (set DATABASE_URL); SQLite is one host's database")
    services.ensure_signing_key()
    project = services.create_project("Scale-out")
    client, _ = services.create_client(project, "Public app", redirect_uris=[REDIRECT_URI], public=True)
    noisy, _ = services.create_client(project, "Noisy app", redirect_uris=[REDIRECT_URI], public=True)
    machine, machine_secret = services.create_client(project, "Backend service")
    services.invite_member(project, "pat@scale.example", profile_type="Patient", first_name="Pat", last_name="Scale",
                           password="Scale-Out-Pass-2026!")
    proxy = RoundRobinProxy(("127.0.0.1", 0))
    threading.Thread(target=proxy.serve_forever, daemon=True).start()

    with redis_server(tmp_path / "redis.log") as redis_url, \
            gunicorn(tmp_path / "a.log", issuer=proxy.url, env={"MEDPLUM_E2E_REDIS_URL": redis_url}) as a, \
            gunicorn(tmp_path / "b.log", issuer=proxy.url, env={"MEDPLUM_E2E_REDIS_URL": redis_url}) as b:
        proxy.upstreams = [a.url, b.url]
        instances = [a, b]

        # 1. Sign-in, consent, token and refresh, every request on the other instance than the last.
        token_on, first = signed_in_tokens(proxy, client.client_id)
        status, refresh_on, refreshed = through(proxy, "/oauth2/token", {
            "grant_type": "refresh_token", "client_id": client.client_id, "refresh_token": first["refresh_token"]})
        assert status == 200 and refreshed["refresh_token"] != first["refresh_token"]
        flow = list(proxy.served)
        assert len(flow) >= 5 and all(x != y for x, y in zip(flow, flow[1:], strict=False)), flow
        assert refresh_on != token_on and set(flow) == {0, 1}
        assert [userinfo_status(i.url, refreshed["access_token"]) for i in instances] == [200, 200]

        # 2. A key rotation is published by both instances at once (the JWK Set is never cached).
        old_kid = kid(refreshed["access_token"])
        rotated_at = time.monotonic()
        new_kid = services.rotate_signing_keys().kid
        assert all({old_kid, new_kid} <= jwks_kids(i.url) for i in instances)

        # 3. Throttle counters are shared through Redis: failures on A and B add up to one limit.
        limit = auth_settings.TOKEN_CLIENT_MAX_FAILURES
        bad = {"grant_type": "refresh_token", "client_id": noisy.client_id, "refresh_token": "not-a-token"}
        served = [through(proxy, "/oauth2/token", bad)[:2] for _ in range(limit)]
        assert {status for status, _ in served} == {400} and {on for _, on in served} == {0, 1}
        for instance in instances:
            status, headers, body = Browser().request(f"{instance.url}/oauth2/token", bad)
            assert (status, json.loads(body)["error"]) == (429, "temporarily_unavailable")
            assert int(headers["Retry-After"]) > 0

        # 3b. DPoP: a nonce from A is good at B (stateless, one SECRET_KEY), and a proof accepted
        # by A is refused as a replay by B (its jti is in the shared Redis cache).
        key = DPoPKey("ES256")
        machine_auth = {"Authorization": "Basic " + base64.b64encode(
            f"{machine.client_id}:{machine_secret}".encode()).decode()}
        token_url = f"{proxy.url}/oauth2/token"
        grant = {"grant_type": "client_credentials"}

        def dpop_token(instance: Any, proof: str) -> tuple[int, dict[str, str], dict[str, Any]]:
            status, headers, body = Browser().request(f"{instance.url}/oauth2/token", grant,
                                                      {**machine_auth, "DPoP": proof})
            return status, headers, json.loads(body)

        status, headers, body = dpop_token(a, key.proof("POST", token_url))
        assert (status, body["error"]) == (400, "use_dpop_nonce"), body
        proof = key.proof("POST", token_url, nonce=headers["DPoP-Nonce"])
        status, _, bound = dpop_token(b, proof)
        assert status == 200 and bound["token_type"] == "DPoP", bound
        status, _, body = dpop_token(a, proof)
        assert (status, body["error"]) == (400, "invalid_dpop_proof") and "used before" in body["error_description"]
        read = key.proof("GET", f"{proxy.url}/oauth2/userinfo", access_token=bound["access_token"],
                         nonce=headers["DPoP-Nonce"])
        replies = [Browser().request(f"{i.url}/oauth2/userinfo", headers={
            "Authorization": f"DPoP {bound['access_token']}", "DPoP": read})[:2] for i in (a, b)]
        assert replies[0][0] == 200 and replies[1][0] == 401, replies
        assert 'error="invalid_dpop_proof"' in replies[1][1]["WWW-Authenticate"]

        # 4. Logout on one instance revokes the login on the other at once.
        status, logout_on, _ = through(proxy, "/oauth2/logout", {},
                                       {"Authorization": f"Bearer {refreshed['access_token']}"})
        assert status == 200
        assert userinfo_status(instances[1 - logout_on].url, refreshed["access_token"]) == 401
        assert Login.objects.get(client=client).revoked_reason == "logout"

        # 5. Both instances sign with the new key within the signing-key cache's lifetime.
        _, current = signed_in_tokens(proxy, client.client_id)
        new_signers: list[int] = []
        while True:
            status, on, current = through(proxy, "/oauth2/token", {
                "grant_type": "refresh_token", "client_id": client.client_id,
                "refresh_token": current["refresh_token"]})
            assert status == 200, current
            # Whatever key signed it, the other instance accepts it.
            assert userinfo_status(instances[1 - on].url, current["access_token"]) == 200
            new_signers = new_signers + [on] if kid(current["access_token"]) == new_kid else []
            if len(new_signers) >= 4:  # two rounds of both instances (each runs 2 workers)
                break
            assert time.monotonic() - rotated_at < tokens.CACHE_SECONDS + 5, "an instance kept the old key"
            time.sleep(0.5)

        # 6. Instance A is killed mid-load: B answers every request, the session goes on.
        results: list[tuple[str, int]] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                results.append(("b", userinfo_status(b.url, current["access_token"])))
                status, _, _ = Browser().request(f"{proxy.url}/oauth2/userinfo",
                                                 headers={"Authorization": f"Bearer {current['access_token']}"})
                results.append(("proxy", status))

        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(1)
        served_before_kill = len(proxy.served)
        kill_instance(a.proc)
        time.sleep(1.5)
        stop.set()
        worker.join()
        assert len(results) > 20 and {status for _, status in results} == {200}, results
        assert set(proxy.served[served_before_kill + 2:]) == {1}  # after the kill only B answered
        status, headers, body = Browser().request(f"{b.url}/oauth2/token", {
            "grant_type": "refresh_token", "client_id": client.client_id, "refresh_token": current["refresh_token"]})
        assert status == 200, body
    proxy.shutdown()
    proxy.server_close()
