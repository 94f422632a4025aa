"""Real clients against a live server.

A session-scoped gunicorn (``config.wsgi``, two worker processes) serves the app on a free
127.0.0.1 port, on the same test database as the session (transactional tests commit their rows,
so the server sees them; on SQLite ``tests/settings.py`` puts the test database in a file). The Node
project in ``e2e/`` (openid-client, @medplum/core, fhirclient, playwright-core driving Debian's
``/usr/bin/chromium``) is installed with ``npm ci`` once when its ``node_modules`` is missing or out of
date. Each test seeds a project, a public client and a Patient through ``medplum_auth.services``,
runs one ``node e2e/<script>.mjs`` with environment variables and asserts on its JSON output.

Without node, npm or chromium the tests skip with the reason; ``MEDPLUM_E2E_REQUIRED=1`` (set by
``.ci/run``) turns that into a failure.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
E2E_DIR = ROOT / "e2e"
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
CHROMIUM = os.environ.get("MEDPLUM_E2E_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("MEDPLUM_E2E_REQUIRED", "") not in {"", "0"}
PASSWORD = "E2e-Patient-Password-2026!"
EMAIL = "e2e.patient@example.org"
# Nothing needs to listen on these: the browser's navigation to them is intercepted (RFC 8252
# loopback URIs). Not port 9 or another port Chromium blocks (ERR_UNSAFE_PORT).
REDIRECT_URI = "http://127.0.0.1:8976/callback"
POST_LOGOUT_URI = "http://127.0.0.1:8976/signed-out"
NODE_TIMEOUT = 120


def unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"{reason} (MEDPLUM_E2E_REQUIRED is set)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node_project() -> Path:
    """``e2e/`` with its pinned dependencies installed (``npm ci`` when the lock file changed)."""
    if not shutil.which("node") or not shutil.which("npm"):
        unavailable("node and npm are needed for the e2e tests")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    lock = E2E_DIR / "package-lock.json"
    wanted = hashlib.sha256(lock.read_bytes() + (E2E_DIR / "package.json").read_bytes()).hexdigest()
    stamp = E2E_DIR / "node_modules" / ".medplum-e2e-stamp"
    # Several pytest sessions may share the checkout: one npm ci at a time.
    lock_path = Path(tempfile.gettempdir()) / f"medplum-e2e-npm-{hashlib.sha256(bytes(E2E_DIR)).hexdigest()[:12]}.lock"
    with open(lock_path, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text() == wanted):
            result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=E2E_DIR,
                                    capture_output=True, text=True, timeout=600)
            if result.returncode:
                unavailable(f"npm ci in e2e/ failed: {(result.stderr or result.stdout)[-2000:]}")
            stamp.write_text(wanted)
    return E2E_DIR


def _free_socket() -> socket.socket:
    """A listening socket on a free loopback port, handed to gunicorn as a file descriptor (no race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@dataclass
class LiveServer:
    url: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def requests_seen(self, method: str, path: str) -> int:
        """How many ``method path`` requests the server has logged (gunicorn's access log) so far."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return 0
        return text.count(f'"{method} {path} ') + text.count(f'"{method} {path}?')

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def test_database() -> dict[str, Any]:
    """The session's test database settings, for a server process (fails for in-memory SQLite)."""
    from django.db import connection

    db = {k: v for k, v in connection.settings_dict.items() if k != "TEST"}
    if db["ENGINE"].endswith("sqlite3") and (not db["NAME"] or connection.is_in_memory_db()):
        pytest.fail("The SQLite test database is in memory; tests/settings.py must give it a file name.")
    return db


def server_environment(db: dict[str, Any], issuer: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a server process (or a ``manage.py`` run) of the e2e settings on ``db``;
    ``env`` adds variables (``MEDPLUM_E2E_REDIS_URL``: a shared Redis cache, see ``server_settings``)."""
    from django.conf import settings

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.e2e.server_settings",
        "MEDPLUM_E2E_DATABASE": json.dumps(db, default=str),
        "MEDPLUM_ISSUER": issuer,
        "SECRET_KEY": settings.SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DEBUG": "0",
        "MEDPLUM_LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **(env or {}),
    }


@contextlib.contextmanager
def gunicorn(log: Path, issuer: str | None = None, workers: int = 2, env: dict[str, str] | None = None,
             database: dict[str, Any] | None = None, args: tuple[str, ...] = ()) -> Iterator[LiveServer]:
    """Run ``config.wsgi`` under gunicorn on a free port and the test database until the block ends.

    ``issuer`` defaults to the server's own URL; give another instance's URL to run a second
    instance of the same deployment (as behind a load balancer). ``env`` adds environment variables
    (see :func:`server_environment`); ``database`` replaces the test database's settings; ``args``
    are more gunicorn options.
    """
    db = database or test_database()
    sock = _free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    issuer = issuer or url
    env = server_environment(db, issuer, env)
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "--workers", str(workers),
             "--bind", f"fd://{sock.fileno()}", "--access-logfile", "-", "--error-logfile", "-",
             "--log-level", "warning", "--timeout", "60", "--graceful-timeout", "5", *args],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, pass_fds=(sock.fileno(),),
        )
    sock.close()
    server = LiveServer(url=url, log=log, proc=proc)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"gunicorn exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{url}/.well-known/openid-configuration", timeout=2) as response:
                    if json.load(response)["issuer"] == issuer:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not answer within 30 s:\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        # Stop before pytest-django drops the test database (PostgreSQL refuses while connected).
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def live_gunicorn(django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory,
                  node_project: Path) -> Iterator[LiveServer]:
    """gunicorn ``config.wsgi`` with 2 workers on the session's test database."""
    with gunicorn(tmp_path_factory.mktemp("e2e-server") / "gunicorn.log") as server:
        yield server


def client_credentials_token(issuer: str, client_id: str, secret: str) -> str:
    """An access token of a confidential client (``client_credentials``, HTTP Basic)."""
    request = urllib.request.Request(
        f"{issuer}/oauth2/token", data=b"grant_type=client_credentials", method="POST",
        headers={"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode(),
                 "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["access_token"]


@dataclass
class Seed:
    project: Any
    client: Any
    membership: Any
    email: str
    password: str


@pytest.fixture
def seed(transactional_db: Any) -> Any:
    """Make a project, a public client (loopback redirect URI) and a Patient with a password."""
    from medplum_auth import services

    def make(**client_fields: Any) -> Seed:
        services.ensure_signing_key()
        project = services.create_project("E2E Clinic", description="Seeded by tests/e2e.")
        client, _ = services.create_client(
            project, "E2E public app", redirect_uris=[REDIRECT_URI], public=True,
            post_logout_redirect_uris=POST_LOGOUT_URI, **client_fields)
        membership = services.invite_member(project, EMAIL, profile_type="Patient", first_name="Pat",
                                            last_name="Lee", password=PASSWORD).membership
        return Seed(project=project, client=client, membership=membership, email=EMAIL, password=PASSWORD)

    return make


@pytest.fixture
def run_node(node_project: Path, live_gunicorn: LiveServer) -> Any:
    """Run ``node e2e/<script>`` against the live server; return its JSON output (fail with its log)."""

    def run(script: str, seed: Seed, **extra_env: str) -> dict[str, Any]:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "E2E_ISSUER": live_gunicorn.url,
            "E2E_CLIENT_ID": seed.client.client_id,
            "E2E_REDIRECT_URI": REDIRECT_URI,
            "E2E_POST_LOGOUT_URI": POST_LOGOUT_URI,
            "E2E_EMAIL": seed.email,
            "E2E_PASSWORD": seed.password,
            "E2E_ARTIFACTS": str(ARTIFACTS),
            "E2E_CHROMIUM": CHROMIUM,
            **extra_env,
        }
        started = time.monotonic()
        try:
            result = subprocess.run(["node", script], cwd=node_project, env=env, capture_output=True, text=True,
                                    timeout=NODE_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"node {script} timed out after {NODE_TIMEOUT} s\nstderr:\n{exc.stderr}\n"
                        f"server log:\n{live_gunicorn.log_tail()}")
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        output = None
        with contextlib.suppress(ValueError, IndexError):
            output = json.loads(lines[-1])
        if result.returncode or not output or not output.get("ok"):
            pytest.fail(f"node {script} failed (exit {result.returncode}):\n"
                        f"output: {json.dumps(output, indent=2) if output else result.stdout[-3000:]}\n"
                        f"stderr:\n{result.stderr[-3000:]}\nserver log:\n{live_gunicorn.log_tail()}")
        output["_seconds"] = round(time.monotonic() - started, 1)
        (ARTIFACTS / f"{Path(script).stem}.json").write_text(json.dumps(output, indent=2))
        return output

    return run
