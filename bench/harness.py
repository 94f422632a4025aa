"""What the load benchmarks share: PostgreSQL, gunicorn, wrk, CPU accounting, slicing, profiles.

``oauth_bench.py`` and ``fhir_bench.py`` import from here. Every figure is a ratio to the bare
Django view (``bare_app.py``) measured in the same run, in slices interleaved with the
scenario's (:func:`interleaved`), so the drift of a shared machine cancels out as far as it can.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DB_NAME = DB_USER = DB_PASSWORD = "medplum_bench"
SECRET_KEY = "bench-oauth-secret-key-" + "k" * 40
PASSWORD = "Bench-Passw0rd-7f3k9q"
REDIRECT_URI = "http://127.0.0.1/bench/callback"


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



def database_setting(name: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {name}")
        value = cursor.fetchone()[0]
    connection.close()
    return value



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
    ("fhir_api", ("fhir_api/",)),
    ("Django REST framework", ("rest_framework/",)),
    ("sessions, auth, middleware, templates (Django)", ("django/",)),
    ("gunicorn: accept, parse, write", ("gunicorn/",)),
    ("logging", ("logging/",)),
]


def summarize_profile(path: Path, limit: int = 25) -> dict[str, Any]:
    """Where busy workers spend time: by category of the sampled (leaf) frame, and inclusive per
    function of ours, of the OAuth libraries and of DRF's request cycle. Idle samples (waiting for
    a connection) are skipped."""
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
            if not any(p in frame for p in ("medplum_auth/", "fhir_api/", "oauthlib/", "jwcrypto/", "oauth2_provider/",
                                            "APIView.dispatch", "APIView.initial", "JSONRenderer.render",
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



# --- one run: arguments, database, servers, measured slices ------------------------------------------

def common_arguments(parser: argparse.ArgumentParser, duration: float = 10.0) -> None:
    """The options every load benchmark takes (load shape, servers, database, profiling)."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--duration", type=float, default=duration,
                        help=f"measured seconds per scenario (default {duration:g})")
    parser.add_argument("--rounds", type=int, default=2,
                        help="slices per scenario, each preceded by an equal slice of the bare view (default 2)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each (default 2)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (default 1: leave the CPUs to the servers)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers per server (default 2)")


def database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="use this (empty or disposable) database instead of "
                                               "recreating medplum_bench on the local cluster")
    parser.add_argument("--durable-commits", action="store_true",
                        help="keep synchronous_commit on for medplum_bench (default: off, see README)")


def profile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", action="store_true",
                        help="after each scenario, load it again under py-spy and print where the workers spend time")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    parser.add_argument("--py-spy", default=shutil.which("py-spy"),
                        help="py-spy executable (pip install py-spy, outside the project's venv is fine)")


def check_tools(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    if args.profile and not (args.py_spy and Path(args.py_spy).exists()):
        sys.exit("--profile needs py-spy: pip install py-spy (in any venv), then --py-spy PATH if not on PATH")


def prepare_django(args: argparse.Namespace) -> tuple[str, int, int, dict[str, str]]:
    """Database (recreated unless ``--database-url``), ports, the app's environment, Django set up
    in this process with the same settings, migrated; ``(database_url, port, bare_port, env)``.

    The environment is this process's plus the bench's own settings, so the example site's other
    variables (e.g. ``DB_PREPARED_STATEMENTS=0``) reach the app as given."""
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
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    log(f"migrating {settings.DATABASES['default']['NAME']}")
    call_command("migrate", interactive=False, verbosity=0)
    return database_url, port, bare_port, env


def start_servers(env: dict[str, str], port: int, bare_port: int, workers: int,
                  prefix: str) -> tuple[subprocess.Popen, subprocess.Popen, Path]:
    """``config.wsgi`` and ``bench/bare_app.py`` under gunicorn, same workers and class; and the
    run's temporary directory (logs, Lua scripts, profiles). Stop both with :func:`stop`."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    app = start_gunicorn("config.wsgi:application", port, workers, env, workdir / "gunicorn-app.log")
    try:
        bare_env = {k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"}
        bare = start_gunicorn("bench.bare_app:application", bare_port, workers, bare_env,
                              workdir / "gunicorn-bare.log")
    except BaseException:
        stop(app)
        raise
    log(f"servers: app http://127.0.0.1:{port} (pid {app.pid}), bare http://127.0.0.1:{bare_port} "
        f"(pid {bare.pid}); logs and scripts in {workdir}")
    return app, bare, workdir


def with_server_cpu(drive: Callable[[], dict[str, Any]], server: Callable[[], set[int]]) -> dict[str, Any]:
    """Run one slice (``drive``) and add the CPU the ``server`` processes spent meanwhile.

    Django reconnects after CONN_MAX_AGE, so PostgreSQL backends come and go: one that started
    during the slice counts from zero, one that exited is left out (its last moments are lost).
    """
    before = {pid: cpu_seconds(pid) or 0.0 for pid in server()}
    result = drive()
    after = {pid: cpu_seconds(pid) for pid in before.keys() | server()}
    result["server_cpu_s"] = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items() if cpu is not None)
    result["server_cores"] = result["server_cpu_s"] / result["seconds"]
    return result


def interleaved(load: Callable[[str, float, str], dict[str, Any]], name: str, args: argparse.Namespace,
                ) -> dict[str, Any]:
    """Scenario ``name`` in ``--rounds`` slices, each right after an equal slice of the bare view,
    after ``--warmup`` of both; the merged result, with the bare slices' under ``"bare"``.

    ``load(name, seconds, part)`` runs one slice (``part``: ``warm`` or ``main-<i>``)."""
    rounds = max(1, args.rounds)
    slice_s = args.duration / rounds
    if args.warmup:
        load("bare", args.warmup, "warm")
        load(name, args.warmup, "warm")
    log(f"{name}: {rounds} x ({slice_s:g} s bare view, {slice_s:g} s {name}) at {args.connections} connections")
    bare_parts, parts = [], []
    for i in range(rounds):
        bare_parts.append(load("bare", slice_s, f"main-{i}"))
        parts.append(load(name, slice_s, f"main-{i}"))
    result = merge(parts)
    result["bare"] = merge(bare_parts)
    result["_parts"] = parts
    return result


def statement_counts(captured_queries: list[dict[str, Any]]) -> dict[str, int]:
    """SQL statements and commits among Django's captured queries (autocommit writes count)."""
    statements = [q["sql"].split(None, 1)[0].upper() for q in captured_queries]
    commits, in_transaction = 0, False
    for verb in statements:
        if verb in ("BEGIN", "SAVEPOINT") and not in_transaction:
            in_transaction = verb == "BEGIN"
        elif verb == "COMMIT":
            commits, in_transaction = commits + 1, False
        elif verb in ("INSERT", "UPDATE", "DELETE") and not in_transaction:
            commits += 1  # autocommit
    return {"statements": len(statements), "commits": commits}
