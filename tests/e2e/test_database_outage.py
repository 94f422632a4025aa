"""PostgreSQL stops under load and starts again: 503s with ``Retry-After`` in each API's shape only
while it is down, full recovery after, and the outage logged once per worker, not per request.

The server (gunicorn, ``config.wsgi``, two workers) runs on a throwaway PostgreSQL server of its
own (:mod:`tests.e2e.pgserver`), so stopping it disturbs no other test or database. Runs in the
PostgreSQL run (``DATABASE_URL=postgres://…``); it needs PostgreSQL's server binaries, which that
run has (``MEDPLUM_E2E_REQUIRED=1`` turns their absence into a failure).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from tests.e2e.conftest import ROOT, LiveServer, gunicorn, server_environment, unavailable
from tests.e2e.pgserver import PgServer, pg_bindir, throwaway_server

pytestmark = pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgres"),
                                reason="the outage test belongs to the PostgreSQL run (DATABASE_URL=postgres://…)")

WORKERS = 2
THREADS = 3
OUTAGE_SECONDS = 2.0
RECOVERY_LIMIT = 10.0


@dataclass
class Deployment:
    server: LiveServer
    pg: PgServer
    seed: dict[str, str]
    access_token: str = ""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    bindir = pg_bindir()
    if bindir is None:
        unavailable("PostgreSQL's server binaries (initdb, pg_ctl) are needed for the outage test")
    with throwaway_server(bindir) as pg:
        pg.createdb("medplum_outage")
        db = pg.database("medplum_outage")
        seeded = subprocess.run([sys.executable, "-m", "tests.e2e.seed_server"], cwd=ROOT, capture_output=True,
                                text=True, timeout=180, env=server_environment(db, "http://127.0.0.1"))
        assert seeded.returncode == 0, seeded.stderr[-3000:]
        seed = json.loads(seeded.stdout.strip().splitlines()[-1])
        with gunicorn(tmp_path_factory.mktemp("outage") / "gunicorn.log", workers=WORKERS, database=db) as server:
            yield Deployment(server=server, pg=pg, seed=seed)


@dataclass
class Answer:
    probe: str
    started: float
    ended: float
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(url: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def pkce_challenge() -> str:
    verifier = base64.urlsafe_b64encode(os.urandom(48)).rstrip(b"=")
    return base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=").decode()


@dataclass
class Probe:
    """One kind of request, its answer while the database is up, and the 503 it must give while down."""

    name: str
    ok_status: int
    send: Callable[[Deployment], tuple[int, dict[str, str], bytes]]
    check_unavailable: Callable[[Answer], None]


def _oauth_503(answer: Answer) -> None:
    assert answer.headers["content-type"].startswith("application/json"), answer
    assert answer.json()["error"] == "temporarily_unavailable", answer
    assert answer.json()["error_description"], answer
    assert answer.headers.get("cache-control") == "no-store", answer


def _outcome_503(answer: Answer) -> None:
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome", answer
    assert body["issue"][0]["code"] == "transient", answer
    assert body["issue"][0]["severity"] == "error", answer


def _html_503(answer: Answer) -> None:
    assert answer.headers["content-type"].startswith("text/html"), answer
    assert b"Temporarily unavailable" in answer.body, answer


def _token(d: Deployment) -> tuple[int, dict[str, str], bytes]:
    basic = base64.b64encode(f"{d.seed['client_id']}:{d.seed['client_secret']}".encode()).decode()
    return request(d.server.url, "POST", "/oauth2/token", b"grant_type=client_credentials",
                   {"Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Basic {basic}"})


def _fhir(d: Deployment) -> tuple[int, dict[str, str], bytes]:
    return request(d.server.url, "GET", "/fhir/R4/Patient", headers={"Authorization": f"Bearer {d.access_token}"})


def _auth_login(d: Deployment) -> tuple[int, dict[str, str], bytes]:
    body = {"email": d.seed["email"], "password": d.seed["password"], "clientId": d.seed["client_id"],
            "scope": "openid", "codeChallenge": pkce_challenge(), "codeChallengeMethod": "S256"}
    return request(d.server.url, "POST", "/auth/login", json.dumps(body).encode(),
                   {"Content-Type": "application/json"})


def _authorize(d: Deployment) -> tuple[int, dict[str, str], bytes]:
    params = {"response_type": "code", "client_id": d.seed["client_id"], "redirect_uri": d.seed["redirect_uri"],
              "scope": "openid", "state": "s", "code_challenge": pkce_challenge(), "code_challenge_method": "S256"}
    return request(d.server.url, "GET", f"/oauth2/authorize?{urlencode(params)}")


PROBES = [
    Probe("token", 200, _token, _oauth_503),
    Probe("fhir", 200, _fhir, _outcome_503),
    Probe("auth-login", 200, _auth_login, _outcome_503),
    Probe("authorize", 302, _authorize, _html_503),
]


@dataclass
class Load:
    deployment: Deployment
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def worker(self, offset: int) -> None:
        i = offset
        while not self.stop.is_set():
            probe = PROBES[i % len(PROBES)]
            i += 1
            started = time.monotonic()
            status, headers, body = probe.send(self.deployment)
            self.answers.append(Answer(probe.name, started, time.monotonic(), status, headers, body))


def test_postgres_outage_is_503_then_recovers(deployment: Deployment) -> None:
    status, _, body = _token(deployment)
    assert status == 200, body
    deployment.access_token = json.loads(body)["access_token"]
    for probe in PROBES:  # every probe works before the outage
        status, _, body = probe.send(deployment)
        assert status == probe.ok_status, (probe.name, status, body[:500])

    load = Load(deployment)
    threads = [threading.Thread(target=load.worker, args=(n,), daemon=True) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    stopping = time.monotonic()
    deployment.pg.stop()
    stopped = time.monotonic()
    time.sleep(OUTAGE_SECONDS)
    starting = time.monotonic()
    deployment.pg.start()
    started = time.monotonic()
    deadline = started + RECOVERY_LIMIT
    while time.monotonic() < deadline:  # every probe succeeds again, then 1 s more of load
        recovered = {a.probe for a in load.answers if a.started > started and a.status != 503}
        if recovered == {p.name for p in PROBES}:
            break
        time.sleep(0.1)
    time.sleep(1.0)
    load.stop.set()
    for thread in threads:
        thread.join(timeout=30)

    by_name = {p.name: p for p in PROBES}
    answers = list(load.answers)
    during = [a for a in answers if a.started >= stopped and a.ended <= starting]
    for answer in answers:
        probe = by_name[answer.probe]
        assert answer.status in (probe.ok_status, 503), (answer.probe, answer.status, answer.body[:500])
        if answer.status == 503:
            assert stopping <= answer.ended and answer.started <= started, \
                f"503 outside the outage: {answer.probe} at {answer.started - stopping:+.2f} s"
            assert answer.headers.get("retry-after") == "5", answer
            probe.check_unavailable(answer)
    for probe in PROBES:
        down = [a for a in during if a.probe == probe.name]
        assert len(down) >= 3, (probe.name, len(down))
        assert all(a.status == 503 for a in down), [(a.probe, a.status) for a in down if a.status != 503]
        after = [a for a in answers if a.probe == probe.name and a.started > started]
        assert after and all(a.status == probe.ok_status for a in after), (probe.name, [a.status for a in after])

    log = deployment.server.log.read_text(errors="replace")
    assert "Traceback" not in log, deployment.server.log_tail(80)
    assert "Internal Server Error" not in log and "Service Unavailable" not in log, deployment.server.log_tail(80)
    assert 1 <= log.count("database unavailable, answering 503") <= WORKERS, deployment.server.log_tail(80)
    assert 1 <= log.count("database available again") <= WORKERS, deployment.server.log_tail(80)
    print(f"outage: {len(answers)} requests, {sum(a.status == 503 for a in answers)} answered 503, "
          f"{len(during)} while down; recovered {max(a.ended for a in answers) - started:.1f} s after start")
