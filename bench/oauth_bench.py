"""OAuth2 / OpenID Connect endpoints under load, as ratios to a bare Django view, in one run.

One run: start PostgreSQL if it is down, (re)create the ``medplum_bench`` database, migrate,
seed a project, a confidential client, a public client and a Patient with a password (through
``medplum_auth.services``), start two gunicorn servers with the same worker count and class
(``config.wsgi`` with production-like settings, and ``bench/bare_app.py``: one ``JsonResponse``
view, no apps, no middleware), then load each scenario at the same concurrency:

* ``discovery`` (answered from memory by ``medplum_auth.wsgi`` once produced) and
  ``discovery_django`` (the same document through Django every time, by a query string the
  memory cache never answers), ``client_credentials`` (Basic auth), ``userinfo`` (Bearer access token) and
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
import http.client
import json
import os
import platform
import secrets
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

if __package__ in (None, ""):  # run as a script: make ``bench.harness`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    PASSWORD,
    REDIRECT_URI,
    CycleError,
    authorize_cycle,
    check_tools,
    commit_latency,
    common_arguments,
    database_arguments,
    database_backends,
    database_setting,
    form,
    interleaved,
    log,
    lua_script,
    pkce_pair,
    prepare_django,
    profile,
    profile_arguments,
    request,
    run_wrk,
    sign_in,
    start_servers,
    statement_counts,
    stop,
    with_server_cpu,
    worker_pids,
)

CYCLE_SCOPE = "openid offline_access"
USERINFO_SCOPE = "openid profile email fhirUser offline_access"


# Ratio to the bare view (higher is better; issue 11) and p99 latency ceiling at 8 connections.
TARGETS = {"discovery": 1.0, "discovery_django": 0.90, "jwks": 0.95, "client_credentials": 0.25,
           "userinfo": 0.55, "refresh_token": 0.18, "authorize_cycle": 0.10, "fhir_read": 0.40,
           "auth_login": 0.0}
#: Scenarios whose target is a rate, not a ratio: ``/auth/login`` is bound by password hashing.
RATE_TARGETS = {"auth_login": 25.0}
#: Resident memory per worker after the run (issue 11).
RSS_TARGET_MB = 100.0
P99_TARGET_MS = 25.0
# medplum_auth.wsgi answers the discovery document from memory once produced, but never a request
# with a query string: this one measures the document produced by Django (the site's middleware) every time.
DISCOVERY_THROUGH_DJANGO = "/.well-known/openid-configuration?bench=uncached"
LABELS = {
    "bare": "bare Django view (baseline)",
    "discovery": "GET discovery document",
    "discovery_django": "  same, through Django every time",
    "jwks": "GET JWKS",
    "client_credentials": "POST token client_credentials",
    "userinfo": "GET userinfo (Bearer)",
    "refresh_token": "POST token refresh_token",
    "authorize_cycle": "authorize prompt=none + code",
    "fhir_read": "GET FHIR own Patient (Bearer)",
    "auth_login": "POST /auth/login JSON (password)",
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
            "email": email, "refresh_tokens": tokens, "patient_path": f"/fhir/R4/{invitation.membership.profile}"}


def login_body(seeded: dict[str, Any]) -> str:
    """``/auth/login`` as ``@medplum/core``'s ``startLogin`` sends it (one fixed PKCE challenge)."""
    return json.dumps({"email": seeded["email"], "password": PASSWORD, "clientId": seeded["spa_id"],
                       "scope": "openid", "codeChallenge": pkce_pair()[1], "codeChallengeMethod": "S256"})


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
        "discovery_django": lambda: client.get(DISCOVERY_THROUGH_DJANGO),
        "jwks": lambda: client.get("/.well-known/jwks.json"),
        "auth_login": lambda: client.post("/auth/login", login_body(seeded), content_type="application/json"),
        "client_credentials": lambda: client.post("/oauth2/token", "grant_type=client_credentials",
                                                  content_type=form_type, HTTP_AUTHORIZATION=f"Basic {basic}"),
        "refresh_token": lambda: client.post("/oauth2/token", urlencode({
            "grant_type": "refresh_token", "client_id": seeded["spa_id"], "refresh_token": next(refresh)}),
            content_type=form_type),
        "authorize": authorize,
        "code_exchange": exchange,
        "userinfo": lambda: client.get("/oauth2/userinfo", HTTP_AUTHORIZATION=f"Bearer {state['access_token']}"),
        "fhir_read": lambda: client.get(seeded["patient_path"], HTTP_AUTHORIZATION=f"Bearer {state['access_token']}",
                                        HTTP_ACCEPT="application/fhir+json"),
    }
    counts: dict[str, dict[str, int]] = {}
    for _attempt in range(2):
        for name, call in calls.items():
            with CaptureQueriesContext(connection) as captured:
                response = call()
            if name == "authorize":
                state["authorize"] = response
            assert response.status_code in (200, 302), (name, response.status_code, response.content[:300])
            counts[name] = statement_counts(captured.captured_queries)
    counts["authorize_cycle"] = {k: counts["authorize"][k] + counts["code_exchange"][k] for k in ("statements",
                                                                                                  "commits")}
    connection.close()
    return counts



# --- main -----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_arguments(parser)
    parser.add_argument("--refresh-tokens", type=int, default=20000, help="pre-issued refresh tokens to measure")
    database_arguments(parser)
    parser.add_argument("--only", help=f"comma-separated scenarios among {','.join(TARGETS)}")
    profile_arguments(parser)
    args = parser.parse_args()

    check_tools(args)
    database_url, port, bare_port, env = prepare_django(args)
    issuer = f"http://127.0.0.1:{port}"
    from django.conf import settings

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

    app = bare = None
    try:
        app, bare, workdir = start_servers(env, port, bare_port, args.workers, "oauth_bench.")
        db_name = str(settings.DATABASES["default"]["NAME"])
        results = run_scenarios(args, port, bare_port, app.pid, bare.pid, db_name, seeded, pools, workdir)
        database["worker_rss_mb"] = [resident_mb(pid) for pid in worker_pids(app.pid)]
    finally:
        stop(app)
        stop(bare)

    report(args, results, settings, sql, database)


def resident_mb(pid: int) -> float:
    """A process's resident memory (``VmRSS``) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


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
    fhir_headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/fhir+json"}
    status, _h, data = request(port, "GET", seeded["patient_path"], headers=fhir_headers)
    assert status == 200 and b'"resourceType":"Patient"' in data.replace(b" ", b""), (status, data)
    status, jwks_headers, data = request(port, "GET", "/.well-known/jwks.json")
    assert status == 200 and b'"keys"' in data, (status, data)
    json_headers = {"Content-Type": "application/json"}
    status, _h, data = request(port, "POST", "/auth/login", login_body(seeded), json_headers)
    assert status == 200 and b'"code"' in data, (status, data)
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
        "discovery_django": lua_script("GET", DISCOVERY_THROUGH_DJANGO, {}),
        "client_credentials": lua_script("POST", "/oauth2/token", cc_headers, cc_body),
        "userinfo": lua_script("GET", "/oauth2/userinfo", {"Authorization": f"Bearer {access_token}"}),
        "jwks": lua_script("GET", "/.well-known/jwks.json", {}),
        "fhir_read": lua_script("GET", seeded["patient_path"], fhir_headers),
        "auth_login": lua_script("POST", "/auth/login", json_headers, login_body(seeded)),
    }
    bare_script = lua_script("GET", "/", {})
    only = set(args.only.split(",")) if args.only else set(TARGETS)
    order = ["discovery", "discovery_django", "jwks", "client_credentials", "userinfo", "refresh_token",
             "authorize_cycle", "fhir_read", "auth_login"]
    results: dict[str, Any] = {}
    profiles: dict[str, Any] = {}

    def load(name: str, seconds: float, part: str) -> dict[str, Any]:
        """One slice of scenario ``name`` and the server CPU it cost (workers plus, for the app,
        its PostgreSQL backends); ``part`` picks the refresh token pool."""
        def server() -> set[int]:
            return set(worker_pids(bare_pid) if name == "bare" else worker_pids(app_pid) + database_backends(db_name))

        return with_server_cpu(lambda: _load(name, seconds, part), server)

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
        results[name] = interleaved(load, name, args)
        parts = results[name].pop("_parts")
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


def report(args: argparse.Namespace, results: dict[str, Any], settings: Any, sql: dict[str, dict[str, int]],
           database: dict[str, Any]) -> None:
    profiles = results.pop("_profiles", {})
    rows = []
    for name, result in results.items():
        ratio = result["rate"] / result["bare"]["rate"]
        target = TARGETS[name]
        met = result["rate"] >= RATE_TARGETS[name] if name in RATE_TARGETS else ratio >= target
        rows.append({
            "scenario": name, "label": LABELS[name],
            "unit": "cycles/s" if name == "authorize_cycle" else "req/s",
            **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items() if k != "bare"},
            "bare_rate": round(result["bare"]["rate"], 1), "bare_p99_ms": round(result["bare"]["p99_ms"], 2),
            "ratio": round(ratio, 3), "target_ratio": target, "ratio_met": met,
            "target_rate": RATE_TARGETS.get(name),
            "bare_server_cpu_ms": round(result["bare"]["server_cpu_ms"], 3),
            "bare_server_cores": result["bare"]["server_cores"],
            "cpu_ratio": round(result["bare"]["server_cpu_ms"] / result["server_cpu_ms"], 3)
            if result["server_cpu_ms"] else None,
            "p99_met": name in RATE_TARGETS or result["p99_ms"] <= P99_TARGET_MS,
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
        "all_targets_met": all(r["ratio_met"] and r["p99_met"] for r in rows)
        and max(database.get("worker_rss_mb") or [0]) <= RSS_TARGET_MB,
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
    print(f"gunicorn worker RSS after the run: {database.get('worker_rss_mb')} MB (target <= {RSS_TARGET_MB:g})\n")
    print(f"{'scenario':<33}{'rate':>9} {'unit':<9}{'bare/s':>7} {'ratio':>6} {'target':>6}  {'p50 ms':>6} "
          f"{'p99 ms':>6}  {'cpu ms':>6} {'cores':>5} {'cpu ratio':>9}  {'SQL':>3} {'cmt':>3} {'errors':>6}  met")
    for r in rows:
        met = "yes" if r["ratio_met"] and r["p99_met"] else ("NO" if not r["ratio_met"] else "NO (p99)")
        if r["target_rate"]:
            met += f" (target {r['target_rate']:g}/s)"
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
