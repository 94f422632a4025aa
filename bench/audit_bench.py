"""AuditEvent search cost as the audit trail grows 10×, on PostgreSQL, in process.

One run: (re)create the database as ``oauth_bench.py`` does (or use ``--database-url``), migrate,
seed a project with an admin (through ``medplum_auth.services``) and nine other projects, then
bulk-insert ``--events`` security events (default 100,000) with one ``INSERT … SELECT
generate_series`` spread over the ten projects (the admin's project gets a tenth), a year of
timestamps, 1,000 users, 20 clients and every event code; ``VACUUM (ANALYZE)``. Then each search
below is requested ``--requests`` times through Django's test client with the admin's Bearer token
(the whole view: authentication, permission, search, Bundle) and its median time printed, along
with the ``EXPLAIN (ANALYZE, BUFFERS)`` of the page query. Then the table grows ``--growth``×
(default 10: the admin's own project grows as much as the others) and everything is measured again.

    .venv/bin/python bench/audit_bench.py                               # 100k then 1M events
    .venv/bin/python bench/audit_bench.py --events 50000 --json         # 50k then 500k

Flat means: each search's median after the growth within 20% of before, and the plans reading
about the same number of pages (``shared hit``/``read``). ``total`` is counted up to 1,000 matches
(then left out), so a project with millions of events still costs one bounded scan.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import database_arguments, log, prepare_django  # noqa: E402

PROJECTS = 10


def seed() -> dict[str, Any]:
    from django.utils import timezone

    from medplum_auth import services, tokens
    from medplum_auth.models import Login

    suffix = timezone.now().strftime("%H%M%S%f")
    projects = [services.create_project(f"Audit bench {suffix} {n}") for n in range(PROJECTS)]
    own = projects[0]
    client, _secret = services.create_client(own, "Audit bench client")
    invitation = services.invite_member(own, f"audit.admin.{suffix}@example.org", profile_type="Practitioner",
                                        first_name="Audit", last_name="Admin", admin=True)
    membership = invitation.membership
    now = timezone.now()
    login = Login.objects.create(user=invitation.user, client=client, project=own, membership=membership,
                                 auth_time=now, granted_at=now, scope="openid")
    token = tokens.issue_access_token(subject=str(invitation.user.pk), client_id=client.client_id,
                                      login_id=str(login.pk), scope="openid", profile=membership.profile,
                                      lifetime=24 * 3600)
    return {"projects": [str(p.pk) for p in projects], "token": token}


def insert_events(projects: list[str], start: int, stop: int) -> float:
    from django.db import connection

    from medplum_auth.models import SecurityEvent, SecurityEventType

    table = connection.ops.quote_name(SecurityEvent._meta.db_table)
    codes = SecurityEventType.values
    sql = f"""
        INSERT INTO {table} (recorded, event_type, outcome, reason, operator_reason, project_id, actor_user,
            actor_membership, actor_profile, actor_client, actor_display, subject, subject_display, remote_addr,
            user_agent, request_id, detail)
        SELECT now() - ((g::bigint * 7919) %% 525600) * interval '1 minute',
               (%s::text[])[1 + g %% %s],
               CASE WHEN g %% 17 = 0 THEN 4 ELSE 0 END, '', '',
               (%s::uuid[])[1 + g %% {PROJECTS}],
               (g %% 1000)::text, '', 'Practitioner/p' || (g %% 1000), 'client-' || (g %% 20),
               'user' || (g %% 1000) || '@example.org', 'Login/' || g, '', '10.0.0.1', 'bench/1.0',
               md5(g::text), '{{}}'::jsonb
        FROM generate_series(%s, %s) AS g
    """
    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(sql, [codes, len(codes), projects, start, stop - 1])
    took = time.perf_counter() - began
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM (ANALYZE) {table}")
    return took


def searches() -> dict[str, dict[str, str]]:
    from django.utils import timezone

    month_ago = (timezone.now() - timedelta(days=30)).date().isoformat()
    return {
        "newest": {"_count": "20"},
        "subtype": {"subtype": "token.issued", "_count": "20"},
        "last_30_days": {"date": f"ge{month_ago}", "_sort": "-date", "_count": "20"},
        "agent": {"agent": "User/42", "_count": "20"},
        "entity": {"entity": "Login/123450", "_count": "20"},
        "failures": {"outcome": "4", "_count": "20"},
        "page_50": {"_count": "20", "_offset": "1000"},
    }


def measure(token: str, requests: int) -> dict[str, Any]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    http = Client(HTTP_HOST="127.0.0.1")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_ACCEPT": "application/fhir+json"}
    results: dict[str, Any] = {}
    for name, params in searches().items():
        first = http.get("/fhir/R4/AuditEvent", params, **headers)
        assert first.status_code == 200, first.content[:500]
        bundle = first.json()
        times = []
        for _ in range(requests):
            began = time.perf_counter()
            http.get("/fhir/R4/AuditEvent", params, **headers)
            times.append((time.perf_counter() - began) * 1000)
        with CaptureQueriesContext(connection) as captured:
            http.get("/fhir/R4/AuditEvent", params, **headers)
        selects = [q["sql"] for q in captured.captured_queries if "medplum_auth_securityevent" in q["sql"]]
        plans = []
        for sql in selects:
            with connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}")
                plan = cursor.fetchone()[0][0]
            plans.append({"execution_ms": round(plan["Execution Time"], 3),
                          "shared_hit": plan["Plan"].get("Shared Hit Blocks", 0),
                          "shared_read": plan["Plan"].get("Shared Read Blocks", 0),
                          "top_node": plan["Plan"]["Node Type"],
                          "indexes": sorted(_indexes(plan["Plan"]))})
        results[name] = {"median_ms": round(statistics.median(times), 3), "p90_ms": round(
            sorted(times)[int(len(times) * 0.9) - 1], 3), "total": bundle.get("total"),
            "entries": len(bundle.get("entry", [])), "statements": len(selects), "plans": plans}
    return results


def _indexes(node: dict[str, Any]) -> set[str]:
    found = {node["Index Name"]} if "Index Name" in node else set()
    for child in node.get("Plans", []):
        found |= _indexes(child)
    return found


def token_path(blocks: int, per_block: int) -> dict[str, Any]:
    """``client_credentials`` and ``refresh_token`` through Django in process, with and without the
    token events (``AUDIT_TOKEN_EVENTS``), in alternating blocks so drift hits both alike. CPU is
    this process's (``time.process_time``: the app's Python and the driver's share of the database
    round trips), wall includes PostgreSQL's side."""
    import base64
    import secrets as random_secrets
    from datetime import timedelta as delta

    from django.conf import settings
    from django.test import Client, override_settings
    from django.utils import timezone

    from medplum_auth import services
    from medplum_auth.models import Login
    from medplum_auth.oauth2_validators import token_digest

    project = services.create_project(f"Audit token bench {timezone.now():%H%M%S%f}")
    backend, secret = services.create_client(project, "Token bench backend")
    spa, _ = services.create_client(project, "Token bench SPA", public=True,
                                    redirect_uris=["http://127.0.0.1:8888/callback"])
    user = services.invite_member(project, f"tok.{random_secrets.token_hex(4)}@example.org", profile_type="Patient",
                                  first_name="T", last_name="P").membership
    basic = "Basic " + base64.b64encode(f"{backend.client_id}:{secret}".encode()).decode()
    http = Client(HTTP_HOST="127.0.0.1")

    def refresh_tokens(n: int) -> list[str]:
        now = timezone.now()
        values = [random_secrets.token_urlsafe(32) for _ in range(n)]
        Login.objects.bulk_create([Login(user=user.user, client=spa, project=project, membership=user,
                                         auth_time=now, granted_at=now, scope="openid offline_access",
                                         refresh_digest=token_digest(v), refresh_expires_at=now + delta(days=1))
                                   for v in values])
        return values

    def run(grant: str, events: bool) -> tuple[float, float]:
        tokens = refresh_tokens(per_block) if grant == "refresh_token" else []
        with override_settings(MEDPLUM_AUTH={**settings.MEDPLUM_AUTH, "AUDIT_TOKEN_EVENTS": events}):
            cpu, wall = time.process_time(), time.perf_counter()
            for n in range(per_block):
                if grant == "client_credentials":
                    response = http.post("/oauth2/token", "grant_type=client_credentials&scope=system%2F*.rs",
                                         content_type="application/x-www-form-urlencoded",
                                         HTTP_AUTHORIZATION=basic)
                else:
                    response = http.post("/oauth2/token", f"grant_type=refresh_token&refresh_token={tokens[n]}"
                                         f"&client_id={spa.client_id}",
                                         content_type="application/x-www-form-urlencoded")
                assert response.status_code == 200, response.content
            return ((time.process_time() - cpu) * 1000 / per_block, (time.perf_counter() - wall) * 1000 / per_block)

    results: dict[str, Any] = {}
    for grant in ("client_credentials", "refresh_token"):
        run(grant, True), run(grant, False)  # warm-up
        samples: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for block in range(blocks):
            for events in ((True, False) if block % 2 else (False, True)):
                samples[events].append(run(grant, events))
        on_cpu, off_cpu = (statistics.median(c for c, _ in samples[e]) for e in (True, False))
        on_wall, off_wall = (statistics.median(w for _, w in samples[e]) for e in (True, False))
        results[grant] = {"cpu_ms_without": round(off_cpu, 3), "cpu_ms_with": round(on_cpu, 3),
                          "cpu_ratio": round(on_cpu / off_cpu, 3), "wall_ms_without": round(off_wall, 3),
                          "wall_ms_with": round(on_wall, 3), "wall_ratio": round(on_wall / off_wall, 3)}
    return results


def table_size() -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), pg_total_relation_size('medplum_auth_securityevent') "
                       "FROM medplum_auth_securityevent")
        rows, size = cursor.fetchone()
    return {"rows": rows, "total_size_mb": round(size / 1e6, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    database_arguments(parser)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--growth", type=int, default=10)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--token-blocks", type=int, default=8, help="alternating blocks per grant (0: skip)")
    parser.add_argument("--token-requests", type=int, default=200, help="token requests per block")
    args = parser.parse_args()
    prepare_django(args)
    from django.db import connection

    if connection.vendor != "postgresql":
        sys.exit("audit_bench needs PostgreSQL")
    seeded = seed()
    report: dict[str, Any] = {"events": args.events, "growth": args.growth, "requests": args.requests}
    if args.token_blocks:
        log(f"token path: {args.token_blocks} blocks of {args.token_requests} requests per grant, events on/off")
        report["token_path"] = token_path(args.token_blocks, args.token_requests)
    log(f"inserting {args.events:,} events")
    report["insert_s"] = round(insert_events(seeded["projects"], 0, args.events), 1)
    report["before"] = {"table": table_size(), "searches": measure(seeded["token"], args.requests)}
    grown = args.events * args.growth
    log(f"growing to {grown:,} events")
    report["grow_insert_s"] = round(insert_events(seeded["projects"], args.events, grown), 1)
    report["after"] = {"table": table_size(), "searches": measure(seeded["token"], args.requests)}
    for name, before in report["before"]["searches"].items():
        after = report["after"]["searches"][name]
        after["ratio_to_before"] = round(after["median_ms"] / before["median_ms"], 2)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for grant, row in report.get("token_path", {}).items():
        print(f"token path {grant:<20} CPU {row['cpu_ms_without']} → {row['cpu_ms_with']} ms ({row['cpu_ratio']}×), "
              f"wall {row['wall_ms_without']} → {row['wall_ms_with']} ms ({row['wall_ratio']}×)")
    print(f"\nAuditEvent search, {args.events:,} → {grown:,} security events "
          f"({report['before']['table']['total_size_mb']} → {report['after']['table']['total_size_mb']} MB)")
    print(f"{'search':<14}{'before ms':>10}{'after ms':>10}{'ratio':>7}{'total':>9}  "
          f"{'pages before→after':>20}  indexes")
    for name, before in report["before"]["searches"].items():
        after = report["after"]["searches"][name]
        pages = (f"{sum(p['shared_hit'] + p['shared_read'] for p in before['plans'])}→"
                 f"{sum(p['shared_hit'] + p['shared_read'] for p in after['plans'])}")
        indexes = ",".join(sorted({i for p in after["plans"] for i in p["indexes"]}))
        print(f"{name:<14}{before['median_ms']:>10}{after['median_ms']:>10}{after['ratio_to_before']:>7}"
              f"{str(after['total']):>9}  {pages:>20}  {indexes}")


if __name__ == "__main__":
    main()
