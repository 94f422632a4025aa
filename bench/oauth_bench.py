"""OAuth2 / OpenID Connect endpoints under load, as ratios to a bare Django view, in one run.

One run: start PostgreSQL if it is down, (re)create the ``medplum_bench`` database, migrate,
seed a project, a confidential client, a public client and a Patient with a password (through
``medplum_auth.services``), start two gunicorn servers with the same worker count and class
(``config.wsgi`` with production-like settings, and ``bench/bare_app.py``: one ``JsonResponse``
view, no apps, no middleware), then load each scenario at the same concurrency:

* ``discovery``, ``client_credentials`` (Basic auth), ``userinfo`` (Bearer access token) and
  ``refresh_token``: wrk, with a Lua script per scenario. Refresh tokens rotate, so each
  request sends a different pre-issued token: the bench stores them as the token endpoint does
  (a ``Login`` holding the token's SHA-256 digest) and each wrk thread walks its own share.
* ``authorize_cycle``: an already signed-in browser (session cookie from ``/auth/login``)
  doing ``/oauth2/authorize?prompt=none`` -> code -> ``/oauth2/token`` (PKCE S256), in a
  multi-threaded Python driver (http.client), one thread and one session per connection.
  Counted as cycles/s; latency percentiles are per HTTP request and per cycle.

Each scenario runs in slices, each right after an equal slice of the bare view (wrk, ``GET /``),
and its rate is given as a ratio to the bare view's rate in those slices, so that the drift of a
shared machine cancels out as far as it can. Needs wrk
(``apt-get install -y wrk``) and, unless ``--database-url`` is given, root (for ``runuser -u
postgres``) and the Debian PostgreSQL 15 cluster.

    .venv/bin/python bench/oauth_bench.py            # table
    .venv/bin/python bench/oauth_bench.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DB_NAME = DB_USER = DB_PASSWORD = "medplum_bench"
SECRET_KEY = "bench-oauth-secret-key-" + "k" * 40
PASSWORD = "Bench-Passw0rd-7f3k9q"
REDIRECT_URI = "http://127.0.0.1/bench/callback"
CYCLE_SCOPE = "openid offline_access"
USERINFO_SCOPE = "openid profile email fhirUser offline_access"

# Ratio to the bare view (higher is better) and p99 latency ceiling at 8 connections.
TARGETS = {"discovery": 0.90, "client_credentials": 0.34, "userinfo": 0.65, "refresh_token": 0.20,
           "authorize_cycle": 0.13}
P99_TARGET_MS = 25.0
LABELS = {
    "bare": "bare Django view (baseline)",
    "discovery": "GET discovery document",
    "client_credentials": "POST token client_credentials",
    "userinfo": "GET userinfo (Bearer)",
    "refresh_token": "POST token refresh_token",
    "authorize_cycle": "authorize prompt=none + code",
}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- PostgreSQL --------------------------------------------------------------------------------

def ensure_postgres() -> None:
    def ready() -> bool:
        return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"], check=False).returncode == 0

    if ready():
        return
    log("starting PostgreSQL (pg_ctlcluster 15 main start)")
    subprocess.run(["pg_ctlcluster", "15", "main", "start"], check=False)
    for _ in range(30):
        if ready():
            return
        time.sleep(1)
    sys.exit("PostgreSQL did not start; pass --database-url to use another server.")


def create_database(durable_commits: bool) -> str:
    """Drop and recreate ``medplum_bench`` (own role): every run starts from an empty schema.

    Unless ``durable_commits``, the database gets ``synchronous_commit = off``: a commit then
    returns before its WAL record reaches the disk (a crash may lose the last few hundred
    milliseconds of commits, never consistency). See :func:`commit_latency` for why.
    """
    sync = "" if durable_commits else f"ALTER DATABASE {DB_NAME} SET synchronous_commit = off;"
    sql = f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DB_USER}') THEN
    CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}';
  END IF;
END $$;
DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE);
CREATE DATABASE {DB_NAME} OWNER {DB_USER};
{sync}
"""
    subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-q", "-v", "ON_ERROR_STOP=1"],
                   input=sql, text=True, check=True, cwd="/")
    return f"postgres://{DB_USER}:{DB_PASSWORD}@127.0.0.1:5432/{DB_NAME}"


def commit_latency(database_url: str) -> dict[str, float]:
    """Milliseconds per round trip and per single-row autocommit INSERT, durable and not.

    Where the disk's flush is slow (4 ms was seen on this kind of machine), every durable
    commit blocks a sync worker that long, and write endpoints measure the disk, not the app.
    """
    import psycopg

    def per_call(conn: Any, sql: str, n: int = 200) -> float:
        start = time.perf_counter()
        for _ in range(n):
            conn.execute(sql)
        return round((time.perf_counter() - start) / n * 1000, 3)

    url = database_url.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (x int)")
        result = {"select_1_ms": per_call(conn, "SELECT 1")}
        conn.execute("SET synchronous_commit = on")
        result["durable_commit_ms"] = per_call(conn, "INSERT INTO bench_commit_probe VALUES (1)", 100)
        conn.execute("SET synchronous_commit = off")
        result["async_commit_ms"] = per_call(conn, "INSERT INTO bench_commit_probe VALUES (1)")
        conn.execute("DROP TABLE bench_commit_probe")
    return result


# --- servers -----------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(app: str, port: int, workers: int, env: dict[str, str], logfile: Path) -> subprocess.Popen:
    cmd = [str(VENV_BIN / "gunicorn"), app, "--workers", str(workers), "--worker-class", "sync",
           "--bind", f"127.0.0.1:{port}", "--backlog", "2048", "--timeout", "60", "--log-level", "warning"]
    out = logfile.open("ab")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"gunicorn {app} exited; see {logfile}")
        try:
            status, _h, _b = request(port, "GET", "/.well-known/openid-configuration" if "config" in app else "/")
            if status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"gunicorn {app} did not answer; see {logfile}")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # gunicorn's master stops its own workers
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def database_backends(database: str) -> list[int]:
    """PostgreSQL backend processes serving ``database`` (their title names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("postgres: ") and f" {database} " in title:
                pids.append(int(entry.name))
    return pids


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds consumed so far by ``pid``; ``None`` once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (stat fields 14, 15)


# --- HTTP helpers ------------------------------------------------------------------------------

def request(port: int, method: str, path: str, body: bytes | str | None = None,
            headers: dict[str, str] | None = None, conn: http.client.HTTPConnection | None = None,
            ) -> tuple[int, http.client.HTTPMessage, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        if own:
            conn.close()


def form(data: dict[str, str]) -> tuple[str, dict[str, str]]:
    return urlencode(data), {"Content-Type": "application/x-www-form-urlencoded"}


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def session_cookie(headers: http.client.HTTPMessage) -> str:
    for value in headers.get_all("Set-Cookie") or []:
        if value.startswith("sessionid="):
            return value.split(";", 1)[0]
    raise RuntimeError("no session cookie in the sign-in response")


def sign_in(port: int, email: str, client_id: str) -> str:
    """``/auth/login`` signs in and starts the browser session; return its ``Cookie`` header."""
    _verifier, challenge = pkce_pair()
    body = json.dumps({"email": email, "password": PASSWORD, "clientId": client_id, "scope": "openid",
                       "codeChallenge": challenge, "codeChallengeMethod": "S256"})
    status, headers, data = request(port, "POST", "/auth/login", body, {"Content-Type": "application/json"})
    if status != 200:
        raise RuntimeError(f"sign-in failed: {status} {data[:300]!r}")
    return session_cookie(headers)


class CycleError(Exception):
    pass


def authorize_cycle(port: int, cookie: str, client_id: str, scope: str,
                    conn: http.client.HTTPConnection | None = None) -> tuple[dict[str, Any], float, float]:
    """One silent authorization and code exchange; ``(token response, authorize s, token s)``."""
    verifier, challenge = pkce_pair()
    query = urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
                       "scope": scope, "state": secrets.token_urlsafe(8), "code_challenge": challenge,
                       "code_challenge_method": "S256", "prompt": "none"})
    t0 = time.perf_counter()
    status, headers, data = request(port, "GET", f"/oauth2/authorize?{query}", headers={"Cookie": cookie}, conn=conn)
    t1 = time.perf_counter()
    location = headers.get("Location", "")
    code = parse_qs(urlsplit(location).query).get("code", [""])[0]
    if status != 302 or not code:
        raise CycleError(f"authorize: {status} {location or data[:300]!r}")
    body, form_headers = form({"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                               "client_id": client_id, "code_verifier": verifier})
    status, _headers, data = request(port, "POST", "/oauth2/token", body, form_headers, conn=conn)
    t2 = time.perf_counter()
    if status != 200:
        raise CycleError(f"token: {status} {data[:300]!r}")
    return json.loads(data), t1 - t0, t2 - t1


# --- wrk -----------------------------------------------------------------------------------------

def lua_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


LUA_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"errors_status":%d,"errors_connect":%d,' ..
    '"errors_read":%d,"errors_write":%d,"errors_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def lua_script(method: str, path: str, headers: dict[str, str], body: str = "",
               tokens_file: Path | None = None, threads: int = 1) -> str:
    """A static request, or (with ``tokens_file``) one that appends a fresh token to ``body``."""
    header_lines = "\n".join(f"wrk.headers[{lua_str(k)}] = {lua_str(v)}" for k, v in headers.items())
    if tokens_file is None:
        return (f"wrk.method = {lua_str(method)}\nwrk.path = {lua_str(path)}\n"
                f"wrk.body = {lua_str(body) if body else 'nil'}\n{header_lines}\n{LUA_DONE}")
    return f"""
local nthreads = {threads}
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
{header_lines}
local tokens, index = {{}}, 0
function init(args)
  local n = 0
  for line in io.lines({lua_str(str(tokens_file))}) do
    if n % nthreads == id then tokens[#tokens + 1] = line end
    n = n + 1
  end
end
function request()
  index = index + 1
  return wrk.format({lua_str(method)}, {lua_str(path)}, nil, {lua_str(body)} .. (tokens[index] or "exhausted"))
end
{LUA_DONE}
"""


def run_wrk(port: int, script: str, workdir: Path, name: str, duration: float, connections: int,
            threads: int) -> dict[str, Any]:
    lua = workdir / f"{name}.lua"
    lua.write_text(script)
    # wrk takes whole seconds; rates come from the duration wrk reports.
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s",
           "--timeout", "10s", "-s", str(lua), f"http://127.0.0.1:{port}/"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr or done.stdout}")
    out = done.stdout
    line = next((x for x in out.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    raw = json.loads(line[len("BENCH_JSON "):])
    seconds = raw["duration_us"] / 1e6
    errors = sum(v for k, v in raw.items() if k.startswith("errors_"))
    return {
        "rate": raw["requests"] / seconds,
        "requests": raw["requests"],
        "seconds": round(seconds, 2),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": errors,
        "error_detail": {k[len("errors_"):]: v for k, v in raw.items() if k.startswith("errors_") and v},
        "driver": "wrk",
    }


# --- the cycle driver ------------------------------------------------------------------------------

def run_cycles(port: int, cookies: list[str], client_id: str, duration: float) -> dict[str, Any]:
    """Each thread loops silent authorization + code exchange on its own session until time is up."""
    barrier = threading.Barrier(len(cookies) + 1)
    deadline: list[float] = [0.0]
    results: list[tuple[list[float], list[float], list[float], int, list[str]]] = []
    lock = threading.Lock()

    def worker(cookie: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        cycles: list[float] = []
        legs: list[float] = []
        ends: list[float] = []
        errors = 0
        messages: list[str] = []
        barrier.wait()
        while time.perf_counter() < deadline[0]:
            start = time.perf_counter()
            try:
                _token, t_auth, t_token = authorize_cycle(port, cookie, client_id, CYCLE_SCOPE, conn)
            except (CycleError, OSError, http.client.HTTPException) as exc:
                errors += 1
                if len(messages) < 3:
                    messages.append(str(exc))
                conn.close()
                continue
            end = time.perf_counter()
            cycles.append(end - start)
            legs += [t_auth, t_token]
            ends.append(end)
        conn.close()
        with lock:
            results.append((cycles, legs, ends, errors, messages))

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in cookies]
    for t in threads:
        t.start()
    driver_cpu = time.process_time()
    start = time.perf_counter()
    deadline[0] = start + duration
    barrier.wait()
    for t in threads:
        t.join()
    driver_cpu = time.process_time() - driver_cpu
    cycles = sorted(c for r in results for c in r[0])
    legs = sorted(x for r in results for x in r[1])
    elapsed = max((e for r in results for e in r[2]), default=start + duration) - start
    errors = sum(r[3] for r in results)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")

    return {
        "rate": len(cycles) / elapsed,
        "requests": 2 * len(cycles),
        "cycles": len(cycles),
        "seconds": round(elapsed, 2),
        "p50_ms": pct(legs, 0.50),
        "p90_ms": pct(legs, 0.90),
        "p99_ms": pct(legs, 0.99),
        "max_ms": pct(legs, 1.0),
        "cycle_p50_ms": pct(cycles, 0.50),
        "cycle_p99_ms": pct(cycles, 0.99),
        "errors": errors,
        "error_detail": [m for r in results for m in r[4]][:3],
        "driver": f"python http.client, {len(cookies)} threads",
        "driver_cpu_share": round(driver_cpu / elapsed, 2),  # of one core: near 1.0, the driver limits
    }


# --- seeding --------------------------------------------------------------------------------------

def seed(refresh_tokens: int, suffix: str) -> dict[str, Any]:
    """A project, two clients and a Patient (services), plus pre-issued refresh tokens."""
    from django.db import connection
    from django.utils import timezone

    from medplum_auth import authorization, services
    from medplum_auth.conf import auth_settings
    from medplum_auth.models import Login
    from medplum_auth.oauth2_validators import token_digest

    project = services.create_project(f"Bench {suffix}")
    backend, backend_secret = services.create_client(project, "Bench backend service")
    spa, _none = services.create_client(project, "Bench SPA", public=True, redirect_uris=[REDIRECT_URI])
    email = f"bench.patient.{suffix}@example.org"
    invitation = services.invite_member(project, email, profile_type="Patient", first_name="Bench",
                                        last_name="Patient", password=PASSWORD)
    authorization.record_consent(invitation.user, spa, USERINFO_SCOPE.split())

    # What save_bearer_token leaves behind for an offline_access code exchange: a Login holding
    # the refresh token's digest. One Login per token, so a rotation never touches another's row.
    now = timezone.now()
    lifetime = timedelta(seconds=int(auth_settings.REFRESH_TOKEN_LIFETIME))
    tokens = [secrets.token_urlsafe(32) for _ in range(refresh_tokens)]
    Login.objects.bulk_create(
        [Login(user=invitation.user, client=spa, project=project, membership=invitation.membership,
               auth_method=Login.Method.PASSWORD, auth_time=now, scope=CYCLE_SCOPE, granted_at=now,
               refresh_digest=token_digest(t), refresh_rotated_at=now, refresh_expires_at=now + lifetime)
         for t in tokens],
        batch_size=2000,
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    connection.close()
    return {"backend_id": backend.client_id, "backend_secret": backend_secret, "spa_id": spa.client_id,
            "email": email, "refresh_tokens": tokens}


def query_counts(seeded: dict[str, Any], issuer: str) -> dict[str, dict[str, int]]:
    """SQL statements and commits per request of each scenario, in process (Django's test client,
    same settings and database), after one unmeasured pass so per-process caches are warm."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST=urlsplit(issuer).netloc)
    _verifier, challenge = pkce_pair()
    response = client.post("/auth/login", json.dumps({
        "email": seeded["email"], "password": PASSWORD, "clientId": seeded["spa_id"], "scope": "openid",
        "codeChallenge": challenge, "codeChallengeMethod": "S256"}), content_type="application/json")
    assert response.status_code == 200, response.content
    basic = base64.b64encode(f"{seeded['backend_id']}:{seeded['backend_secret']}".encode()).decode()
    form_type = "application/x-www-form-urlencoded"
    refresh = iter(seeded["refresh_tokens"])
    state: dict[str, Any] = {}

    def authorize() -> Any:
        verifier, challenge = pkce_pair()
        state["verifier"] = verifier
        return client.get("/oauth2/authorize?" + urlencode({
            "response_type": "code", "client_id": seeded["spa_id"], "redirect_uri": REDIRECT_URI,
            "scope": CYCLE_SCOPE, "state": "s", "code_challenge": challenge, "code_challenge_method": "S256",
            "prompt": "none"}))

    def exchange() -> Any:
        code = parse_qs(urlsplit(state["authorize"]["Location"]).query)["code"][0]
        response = client.post("/oauth2/token", urlencode({
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "client_id": seeded["spa_id"], "code_verifier": state["verifier"]}), content_type=form_type)
        state["access_token"] = response.json()["access_token"]
        return response

    calls = {
        "discovery": lambda: client.get("/.well-known/openid-configuration"),
        "client_credentials": lambda: client.post("/oauth2/token", "grant_type=client_credentials",
                                                  content_type=form_type, HTTP_AUTHORIZATION=f"Basic {basic}"),
        "refresh_token": lambda: client.post("/oauth2/token", urlencode({
            "grant_type": "refresh_token", "client_id": seeded["spa_id"], "refresh_token": next(refresh)}),
            content_type=form_type),
        "authorize": authorize,
        "code_exchange": exchange,
        "userinfo": lambda: client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {state['access_token']}"),
    }
    counts: dict[str, dict[str, int]] = {}
    for _attempt in range(2):
        for name, call in calls.items():
            with CaptureQueriesContext(connection) as captured:
                response = call()
            if name == "authorize":
                state["authorize"] = response
            assert response.status_code in (200, 302), (name, response.status_code, response.content[:300])
            statements = [q["sql"].split(None, 1)[0].upper() for q in captured.captured_queries]
            commits, in_transaction = 0, False
            for verb in statements:
                if verb in ("BEGIN", "SAVEPOINT") and not in_transaction:
                    in_transaction = verb == "BEGIN"
                elif verb == "COMMIT":
                    commits, in_transaction = commits + 1, False
                elif verb in ("INSERT", "UPDATE", "DELETE") and not in_transaction:
                    commits += 1  # autocommit
            counts[name] = {"statements": len(statements), "commits": commits}
    counts["authorize_cycle"] = {k: counts["authorize"][k] + counts["code_exchange"][k] for k in ("statements",
                                                                                                  "commits")}
    connection.close()
    return counts


# --- main -----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario (default 10)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="slices per scenario, each preceded by an equal slice of the bare view (default 2)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each (default 2)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (default 1: leave the CPUs to the servers)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers per server (default 2)")
    parser.add_argument("--refresh-tokens", type=int, default=20000, help="pre-issued refresh tokens to measure")
    parser.add_argument("--database-url", help="use this (empty or disposable) database instead of "
                                               "recreating medplum_bench on the local cluster")
    parser.add_argument("--durable-commits", action="store_true",
                        help="keep synchronous_commit on for medplum_bench (default: off, see README)")
    parser.add_argument("--only", help=f"comma-separated scenarios among {','.join(TARGETS)}")
    parser.add_argument("--profile", action="store_true",
                        help="after each scenario, load it again under py-spy and print where the workers spend time")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    parser.add_argument("--py-spy", default=shutil.which("py-spy"),
                        help="py-spy executable (pip install py-spy, outside the project's venv is fine)")
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    if args.profile and not (args.py_spy and Path(args.py_spy).exists()):
        sys.exit("--profile needs py-spy: pip install py-spy (in any venv), then --py-spy PATH if not on PATH")
    if args.database_url:
        database_url = args.database_url
    else:
        ensure_postgres()
        database_url = create_database(args.durable_commits)

    port, bare_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "DEBUG"}}
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "0", "SECRET_KEY": SECRET_KEY,
        "MEDPLUM_ISSUER": issuer, "ALLOWED_HOSTS": "127.0.0.1", "DATABASE_URL": database_url,
        "CONN_MAX_AGE": env.get("CONN_MAX_AGE", "60"), "PYTHONPATH": str(ROOT),
    })
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    log(f"migrating {settings.DATABASES['default']['NAME']}")
    call_command("migrate", interactive=False, verbosity=0)
    # wrk starts every run at the top of its token file, so each slice gets a file of its own.
    rounds = max(1, args.rounds)
    sizes = {"warm": 3000, **{f"main-{i}": args.refresh_tokens // rounds for i in range(rounds)},
             "profile": 10000 if args.profile else 0}
    log(f"seeding (+{sum(sizes.values())} pre-issued refresh tokens)")
    seeded = seed(sum(sizes.values()), secrets.token_hex(4))
    pools, start = {}, 0
    for pool, size in sizes.items():
        pools[pool], start = seeded["refresh_tokens"][start:start + size], start + size

    sql = query_counts(seeded, issuer)
    database = {**commit_latency(database_url), "synchronous_commit": database_setting("synchronous_commit")}
    log(f"database: {database}")

    workdir = Path(tempfile.mkdtemp(prefix="oauth_bench."))
    app = bare = None
    try:
        app = start_gunicorn("config.wsgi:application", port, args.workers, env, workdir / "gunicorn-app.log")
        bare_env = {k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"}
        bare = start_gunicorn("bench.bare_app:application", bare_port, args.workers, bare_env,
                              workdir / "gunicorn-bare.log")
        log(f"servers: app {issuer} (pid {app.pid}), bare http://127.0.0.1:{bare_port} (pid {bare.pid}); "
            f"logs and scripts in {workdir}")
        db_name = str(settings.DATABASES["default"]["NAME"])
        results = run_scenarios(args, port, bare_port, app.pid, bare.pid, db_name, seeded, pools, workdir)
    finally:
        stop(app)
        stop(bare)

    report(args, results, settings, sql, database)


def database_setting(name: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {name}")
        value = cursor.fetchone()[0]
    connection.close()
    return value


def run_scenarios(args: argparse.Namespace, port: int, bare_port: int, app_pid: int, bare_pid: int, db_name: str,
                  seeded: dict[str, Any], refresh_pools: dict[str, list[str]], workdir: Path) -> dict[str, Any]:
    # Sanity: every scenario answers correctly once before it is loaded.
    cookies = [sign_in(port, seeded["email"], seeded["spa_id"]) for _ in range(args.connections)]
    first, _a, _t = authorize_cycle(port, cookies[0], seeded["spa_id"], USERINFO_SCOPE)
    access_token = first["access_token"]
    assert first.get("refresh_token") and first.get("id_token"), first
    basic = base64.b64encode(f"{seeded['backend_id']}:{seeded['backend_secret']}".encode()).decode()
    cc_body, form_headers = form({"grant_type": "client_credentials"})
    cc_headers = {**form_headers, "Authorization": f"Basic {basic}"}
    status, _h, data = request(port, "POST", "/oauth2/token", cc_body, cc_headers)
    assert status == 200 and b"access_token" in data, (status, data)
    status, _h, data = request(port, "GET", "/oauth2/userinfo", headers={"Authorization": f"Bearer {access_token}"})
    assert status == 200 and b'"email"' in data, (status, data)
    refresh_prefix = urlencode({"grant_type": "refresh_token", "client_id": seeded["spa_id"]}) + "&refresh_token="
    body = refresh_prefix + first["refresh_token"]
    status, _h, data = request(port, "POST", "/oauth2/token", body, form_headers)
    assert status == 200 and b"refresh_token" in data, (status, data)
    pre_issued = refresh_pools["warm"].pop()
    status, _h, data = request(port, "POST", "/oauth2/token", refresh_prefix + pre_issued, form_headers)
    assert status == 200 and b"refresh_token" in data, (status, data)  # a pre-issued token works like a real one

    t = args.wrk_threads
    refresh_scripts: dict[str, str] = {}
    for pool, tokens in refresh_pools.items():
        token_file = workdir / f"refresh-{pool}.txt"
        token_file.write_text("\n".join(tokens) + "\n")
        refresh_scripts[pool] = lua_script("POST", "/oauth2/token", form_headers, refresh_prefix, token_file, t)
    scripts = {
        "discovery": lua_script("GET", "/.well-known/openid-configuration", {}),
        "client_credentials": lua_script("POST", "/oauth2/token", cc_headers, cc_body),
        "userinfo": lua_script("GET", "/oauth2/userinfo", {"Authorization": f"Bearer {access_token}"}),
    }
    bare_script = lua_script("GET", "/", {})
    only = set(args.only.split(",")) if args.only else set(TARGETS)
    order = ["discovery", "client_credentials", "userinfo", "refresh_token", "authorize_cycle"]
    rounds = max(1, args.rounds)
    slice_s = args.duration / rounds
    results: dict[str, Any] = {}
    profiles: dict[str, Any] = {}

    def load(name: str, seconds: float, part: str) -> dict[str, Any]:
        """One slice of scenario ``name`` and the server CPU it cost (workers plus, for the app,
        its PostgreSQL backends); ``part`` picks the refresh token pool."""
        def server() -> set[int]:
            return set(worker_pids(bare_pid) if name == "bare" else worker_pids(app_pid) + database_backends(db_name))

        # Django reconnects after CONN_MAX_AGE, so backends come and go: one that started during
        # the slice counts from zero, one that exited is left out (its last moments are lost).
        before = {pid: cpu_seconds(pid) or 0.0 for pid in server()}
        result = _load(name, seconds, part)
        after = {pid: cpu_seconds(pid) for pid in before.keys() | server()}
        result["server_cpu_s"] = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items() if cpu is not None)
        result["server_cores"] = result["server_cpu_s"] / result["seconds"]
        return result

    def _load(name: str, seconds: float, part: str) -> dict[str, Any]:
        if name == "bare":
            return run_wrk(bare_port, bare_script, workdir, "bare", seconds, args.connections, t)
        if name == "refresh_token":
            return run_wrk(port, refresh_scripts[part], workdir, f"refresh-{part}", seconds, args.connections, t)
        if name == "authorize_cycle":
            return run_cycles(port, cookies, seeded["spa_id"], seconds)
        return run_wrk(port, scripts[name], workdir, name, seconds, args.connections, t)

    for name in order:
        if name not in only:
            continue
        if args.warmup:
            load("bare", args.warmup, "warm")
            load(name, args.warmup, "warm")
        log(f"{name}: {rounds} x ({slice_s:g} s bare view, {slice_s:g} s {name}) at {args.connections} connections")
        bare_parts, parts = [], []
        for i in range(rounds):
            bare_parts.append(load("bare", slice_s, f"main-{i}"))
            parts.append(load(name, slice_s, f"main-{i}"))
        results[name] = merge(parts)
        results[name]["bare"] = merge(bare_parts)
        if name == "refresh_token":
            per_slice = len(refresh_pools["main-0"])
            results[name]["tokens_per_slice"] = per_slice
            results[name]["tokens_exhausted"] = any(p["requests"] > per_slice for p in parts)
        if args.profile:
            profiles[name] = profile(name, app_pid, args, workdir, lambda n=name: load(n, args.profile_seconds,
                                                                                        "profile"))
    if profiles:
        results["_profiles"] = profiles
    return results


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Slices of one scenario: rates add up over time; latency percentiles are the worst slice's."""
    seconds = sum(p["seconds"] for p in parts)
    count = sum(p.get("cycles", p["requests"]) for p in parts)
    merged: dict[str, Any] = {
        "rate": count / seconds, "requests": sum(p["requests"] for p in parts), "seconds": round(seconds, 2),
        "errors": sum(p["errors"] for p in parts), "driver": parts[0]["driver"],
        "rate_per_slice": [round(p["rate"], 1) for p in parts],
        "server_cpu_ms": 1000 * sum(p["server_cpu_s"] for p in parts) / max(1, count),
        "server_cores": round(sum(p["server_cpu_s"] for p in parts) / seconds, 2),
    }
    for key in parts[0]:
        if key.endswith("_ms"):
            merged[key] = max(p[key] for p in parts) if key.startswith(("p9", "max", "cycle_p9")) else \
                statistics.median(p[key] for p in parts)
    details = [p["error_detail"] for p in parts if p["error_detail"]]
    merged["error_detail"] = details[:3]
    if "cycles" in parts[0]:
        merged["cycles"] = count
        merged["driver_cpu_share"] = max(p["driver_cpu_share"] for p in parts)
    return merged


def profile(name: str, app_pid: int, args: argparse.Namespace, workdir: Path, drive: Any) -> dict[str, Any]:
    """Sample the app's workers with py-spy while ``drive`` loads them; keep the collapsed stacks."""
    out = workdir / f"profile-{name}.txt"
    cmd = [args.py_spy, "record", "--pid", str(app_pid), "--subprocesses", "--rate", "400",
           "--duration", str(int(args.profile_seconds) + 1), "--format", "raw", "--output", str(out)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    drive()
    spy.wait()
    return {"file": str(out), "top": summarize_profile(out)}


CATEGORIES = [  # leaf frame's file -> where the time goes
    ("database wait and driver (psycopg)", ("psycopg/", "psycopg_binary")),
    ("Django ORM", ("django/db/",)),
    ("signing / crypto (jwcrypto, cryptography)", ("jwcrypto/", "cryptography/")),
    ("oauthlib", ("oauthlib/",)),
    ("django-oauth-toolkit", ("oauth2_provider/",)),
    ("medplum_auth", ("medplum_auth/",)),
    ("sessions, auth, middleware, templates (Django)", ("django/",)),
    ("gunicorn: accept, parse, write", ("gunicorn/",)),
    ("logging", ("logging/",)),
]


def summarize_profile(path: Path, limit: int = 25) -> dict[str, Any]:
    """Where busy workers spend time: by category of the sampled (leaf) frame, and inclusive per
    function of ours and of the OAuth libraries. Idle samples (waiting for a connection) are skipped."""
    if not path.exists():
        return {}
    inclusive: dict[str, int] = {}
    categories: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit() or "SyncWorker.handle (" not in stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf = frames[-1]
        category = next((name for name, parts in CATEGORIES if any(p in leaf for p in parts)), "other (stdlib, ...)")
        categories[category] = categories.get(category, 0) + count
        seen = set()
        for frame in frames:
            if not any(p in frame for p in ("medplum_auth/", "oauthlib/", "jwcrypto/", "oauth2_provider/",
                                            "QuerySet.", "SessionStore.", "Model.save", "Atomic.", "execute_sql",
                                            "WSGIHandler.__call__", "SyncWorker.handle_request")):
                continue
            name = frame.rsplit(":", 1)[0] + ")"  # drop the line number
            if name not in seen:
                seen.add(name)
                inclusive[name] = inclusive.get(name, 0) + count
    if not total:
        return {}
    return {
        "samples": total,
        "by_category": sorted(((k, round(v / total, 3)) for k, v in categories.items()), key=lambda kv: -kv[1]),
        "inclusive": [(k, round(v / total, 3)) for k, v in sorted(inclusive.items(), key=lambda kv: -kv[1])[:limit]],
    }


def report(args: argparse.Namespace, results: dict[str, Any], settings: Any, sql: dict[str, dict[str, int]],
           database: dict[str, Any]) -> None:
    profiles = results.pop("_profiles", {})
    rows = []
    for name, result in results.items():
        ratio = result["rate"] / result["bare"]["rate"]
        target = TARGETS[name]
        rows.append({
            "scenario": name, "label": LABELS[name],
            "unit": "cycles/s" if name == "authorize_cycle" else "req/s",
            **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items() if k != "bare"},
            "bare_rate": round(result["bare"]["rate"], 1), "bare_p99_ms": round(result["bare"]["p99_ms"], 2),
            "ratio": round(ratio, 3), "target_ratio": target, "ratio_met": ratio >= target,
            "bare_server_cpu_ms": round(result["bare"]["server_cpu_ms"], 3),
            "bare_server_cores": result["bare"]["server_cores"],
            "cpu_ratio": round(result["bare"]["server_cpu_ms"] / result["server_cpu_ms"], 3)
            if result["server_cpu_ms"] else None,
            "p99_met": result["p99_ms"] <= P99_TARGET_MS,
            "sql_statements": sql[name]["statements"], "sql_commits": sql[name]["commits"],
        })
    bare_rates = [r["bare_rate"] for r in rows]
    summary = {
        "connections": args.connections, "seconds_per_scenario": args.duration, "rounds": args.rounds,
        "gunicorn_workers": args.workers, "worker_class": "sync", "wrk_threads": args.wrk_threads,
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "database": settings.DATABASES["default"]["ENGINE"], "database_timings": database,
        "sql_per_request": sql, "p99_target_ms": P99_TARGET_MS,
        "bare_rate_min": min(bare_rates, default=None), "bare_rate_max": max(bare_rates, default=None),
        "all_targets_met": all(r["ratio_met"] and r["p99_met"] for r in rows),
    }
    if args.json:
        print(json.dumps({"summary": summary, "scenarios": rows, "profiles": profiles}, indent=2))
        return
    print(f"\n{args.connections} connections, gunicorn {args.workers} sync workers, {os.cpu_count()} CPUs; each "
          f"scenario {args.duration:g} s in {args.rounds} slices, each after an equal slice of the bare view; "
          f"ratio = scenario rate / bare rate of those slices\n")
    print(f"PostgreSQL: synchronous_commit {database['synchronous_commit']}; round trip "
          f"{database['select_1_ms']:.2f} ms, durable commit {database['durable_commit_ms']:.2f} ms, "
          f"async commit {database['async_commit_ms']:.2f} ms\n")
    print(f"{'scenario':<33}{'rate':>9} {'unit':<9}{'bare/s':>7} {'ratio':>6} {'target':>6}  {'p50 ms':>6} "
          f"{'p99 ms':>6}  {'cpu ms':>6} {'cores':>5} {'cpu ratio':>9}  {'SQL':>3} {'cmt':>3} {'errors':>6}  met")
    for r in rows:
        met = "yes" if r["ratio_met"] and r["p99_met"] else ("NO" if not r["ratio_met"] else "NO (p99)")
        print(f"{r['label']:<33}{r['rate']:>9.1f} {r['unit']:<9}{r['bare_rate']:>7.0f} {r['ratio']:>6.3f} "
              f"{r['target_ratio']:>6.2f}  {r['p50_ms']:>6.2f} {r['p99_ms']:>6.2f}  {r['server_cpu_ms']:>6.2f} "
              f"{r['server_cores']:>5.2f} {r['cpu_ratio'] or 0:>9.3f}  {r['sql_statements']:>3} "
              f"{r['sql_commits']:>3} {r['errors']:>6}  {met}")
        if r["scenario"] == "authorize_cycle":
            print(f"{'':<33}  per HTTP request above; per cycle: p50 {r['cycle_p50_ms']:.2f} ms, "
                  f"p99 {r['cycle_p99_ms']:.2f} ms")
        if r.get("tokens_exhausted"):
            print(f"{'':<33}  refresh tokens exhausted: raise --refresh-tokens")
        if r["errors"]:
            print(f"{'':<33}  errors: {r['error_detail']}")
    print("cpu ms = server CPU per request or cycle (gunicorn workers + their PostgreSQL backends); cores = "
          f"that CPU per second, of {os.cpu_count()} (below it, the workers wait rather than compute); "
          "cpu ratio = bare view's cpu ms / this one's")
    print("SQL = statements per request (per cycle for the cycle), cmt = commits among them")
    print(f"\nbare view p99: {min(r['bare_p99_ms'] for r in rows):.2f}-{max(r['bare_p99_ms'] for r in rows):.2f} ms. "
          f"p99 target: <= {P99_TARGET_MS:g} ms. All targets met: {'yes' if summary['all_targets_met'] else 'no'}")
    for name, info in profiles.items():
        top = info["top"]
        if not top:
            continue
        print(f"\nprofile {name}: {top['samples']} busy worker samples ({info['file']})")
        print("  by leaf frame:   " + ", ".join(f"{k} {v:.0%}" for k, v in top["by_category"]))
        for frame, share in top["inclusive"]:
            print(f"  {share:6.1%}  {frame}")


if __name__ == "__main__":
    main()
