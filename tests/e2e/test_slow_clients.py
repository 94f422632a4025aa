"""Issue 15 (4): clients that send their bodies slowly must not stall the recommended deployment.

gunicorn's sync workers read a request body inside the worker: a body shorter than its
``Content-Length`` holds the worker until ``--timeout``. The recommended deployment puts nginx
(``docs/nginx.conf``, Debian's package) in front, which buffers whole bodies first. Here one sync
worker sits behind that nginx; several connections send half a body and stall, and a normal
request must still be answered at once; the stalled ones are closed by ``client_body_timeout``,
never reaching gunicorn. Directly against gunicorn the same stall is shown for contrast.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, LiveServer, gunicorn, unavailable

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True),
              pytest.mark.skipif(os.environ.get("DATABASE_URL", "").startswith("postgres"),
                                 reason="the front does not depend on the database: the SQLite run has it")]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SLOW_CLIENTS = 6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def one_worker(django_db_setup: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with gunicorn(tmp_path_factory.mktemp("slow") / "gunicorn.log", workers=1) as server:
        yield server


@pytest.fixture(scope="module")
def nginx_front(one_worker: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(NGINX).exists():
        unavailable("nginx is needed for the slow-client test (apt-get install nginx-light)")
    prefix = tmp_path_factory.mktemp("nginx")
    port = _free_port()
    conf = (ROOT / "docs" / "nginx.conf").read_text().replace("@PREFIX@", str(prefix)).replace(
        "@LISTEN@", f"127.0.0.1:{port}").replace("@UPSTREAM@", one_worker.url.removeprefix("http://"))
    if os.geteuid() == 0:
        # Run as root (CI), nginx's workers would be "nobody", who cannot write large bodies to the
        # temporary files under pytest's private (0700) directory; a deployment's nginx uses its own.
        conf = "user root;\n" + conf
    (prefix / "nginx.conf").write_text(conf)
    started = subprocess.run([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e",
                              str(prefix / "error.log")], capture_output=True, text=True, timeout=30)
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log"),
                        "-s", "stop"], capture_output=True, timeout=30)


def stall(url: str) -> socket.socket:
    """A token request that promises 1000 bytes of body and sends 20."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(b"POST /oauth2/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
                 b"grant_type=client_cre")
    return sock


def timed_get(url: str, timeout: float) -> tuple[int, float]:
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("GET", "/.well-known/jwks.json")
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body[:300])
        return response.status, time.monotonic() - started
    finally:
        connection.close()


def test_slow_bodies_do_not_stall_a_normal_request_behind_nginx(transactional_db: object, nginx_front: str,
                                                                one_worker: LiveServer) -> None:
    slow = [stall(nginx_front) for _ in range(SLOW_CLIENTS)]
    try:
        time.sleep(0.5)
        for _ in range(3):
            status, seconds = timed_get(nginx_front, timeout=10)
            assert status == 200 and seconds < 3, (status, seconds)
        assert one_worker.requests_seen("POST", "/oauth2/token") == 0  # nginx still holds the half bodies
    finally:
        for sock in slow:
            sock.close()


def test_without_the_front_one_slow_body_holds_the_sync_worker(transactional_db: object,
                                                               one_worker: LiveServer) -> None:
    """The contrast (why the front is needed): gunicorn's one sync worker waits for the body.

    (``transactional_db``: pytest-django creates the test database only for sessions whose tests use it.)"""
    slow = stall(one_worker.url)
    try:
        time.sleep(0.3)
        with pytest.raises(TimeoutError):
            timed_get(one_worker.url, timeout=2)
    finally:
        slow.close()
    status, _ = timed_get(one_worker.url, timeout=10)
    assert status == 200


def post_body(url: str, path: str, size: int) -> tuple[int, bytes, str]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", path, body=b"x" * size, headers={"Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("Content-Type") or ""
    finally:
        connection.close()


def test_the_front_passes_bodies_up_to_the_apps_largest_limit(transactional_db: object, nginx_front: str,
                                                              one_worker: LiveServer) -> None:
    """docs/nginx.conf capped bodies at 3 MB, so a 10 MiB Binary or Bundle the app accepts got
    nginx's HTML 413: the app must see them, and only a body over every app limit is stopped at the
    front. The app answers these before reading the body (401 for want of a token, 413 from
    Content-Length); it reads the rest (fhir_api.body.discard_unread), or the sync worker's close
    resets the connection while nginx still sends and nginx answers 502 (CI saw it once in two
    runs), hence several tries."""
    seen = one_worker.requests_seen("POST", "/fhir/R4/Binary")
    for _ in range(4):
        status, body, content_type = post_body(nginx_front, "/fhir/R4/Binary", 9 * 1024 * 1024)
        assert status == 401 and b"OperationOutcome" in body, (status, body[:200])
    assert one_worker.requests_seen("POST", "/fhir/R4/Binary") == seen + 4
    for _ in range(4):  # over FHIR_BUNDLE_MAX_BYTES (10 MiB), under nginx's 11m: the app answers it
        status, body, content_type = post_body(nginx_front, "/fhir/R4", 10 * 1024 * 1024 + 512 * 1024)
        assert status == 401 and b"OperationOutcome" in body, (status, body[:200])
    status, body, content_type = post_body(nginx_front, "/fhir/R4/Binary", 12 * 1024 * 1024)
    assert status == 413 and content_type.startswith("text/html"), (status, content_type)
    assert one_worker.requests_seen("POST", "/fhir/R4/Binary") == seen + 4
