"""FHIR read-by-id and a patient-scoped search under load, as ratios to a bare Django view, in one run.

One run (shared machinery in ``bench/harness.py``, as ``oauth_bench.py``): start PostgreSQL if it
is down, (re)create the ``medplum_bench`` database, migrate, seed, start two gunicorn servers with
the same worker count and class (``config.wsgi`` with production-like settings, and
``bench/bare_app.py``), then load at the same concurrency, each scenario in slices right after
equal slices of the bare view:

* ``read``: ``GET /fhir/R4/Patient/<id>`` with a Patient user's Bearer access token (from a real
  code flow, scope ``openid patient/*.rs``) under the demo-style patient policy
  (``Patient?_id=%patient.id``, ``Observation?subject=%patient``): the policy's and the scope's
  filters are in the SQL.
* ``search``: ``GET /fhir/R4/Observation?subject=Patient/<id>&_count=20``, same token.
* ``search_grown``: the same search after the Observations that are *not* the patient's (other
  patients of the project, and another project) have grown ``--growth`` times (2,000 → 20,000 by
  default). The figure is the ratio of the two searches' ratios to the bare view (each against
  its own adjacent bare slices): flat means within 20%. The raw rate ratio is printed too.

The patient's own data goes through the product's write path (``Repository.create``); the other
data through a bulk path that fills ``Resource``, ``ResourceVersion`` and ``SearchIndex`` with the
same functions (``index_values``, ``compartment``); the bench checks that both paths store the same
rows for the same content, and with a query that every Observation has its ``subject`` index row.
The search's SQL and its ``EXPLAIN (ANALYZE, BUFFERS)`` (with its values, and as the prepared
statement's generic plan) are printed before and after the growth.

    .venv/bin/python bench/fhir_bench.py            # table
    .venv/bin/python bench/fhir_bench.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import secrets
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

if __package__ in (None, ""):  # run as a script: make ``bench.harness`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    PASSWORD,
    REDIRECT_URI,
    authorize_cycle,
    check_tools,
    commit_latency,
    common_arguments,
    database_arguments,
    database_backends,
    database_setting,
    interleaved,
    log,
    lua_script,
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

SCOPE = "openid patient/*.rs"
FHIR_JSON = "application/fhir+json"
# The demo's patient policy (medplum_seed_demo), restricted to the two types the bench reads.
PATIENT_POLICY = [
    {"resourceType": "Patient", "criteria": "Patient?_id=%patient.id"},
    {"resourceType": "Observation", "criteria": "Observation?subject=%patient"},
]
TARGETS = {"read": 0.49, "search": 0.20, "search_grown": 0.20}
FLATNESS_TARGET = 0.20  # search_grown rate within 20% of search rate
LABELS = {
    "read": "GET Patient/<id> (read by id)",
    "search": "GET Observation?subject=&_count=20",
    "search_grown": "  same, other data grown",
}


# --- data ----------------------------------------------------------------------------------------

def patient_content(n: int) -> dict[str, Any]:
    return {"resourceType": "Patient", "active": True, "gender": "female" if n % 2 else "male",
            "birthDate": f"{1940 + n % 60}-{1 + n % 12:02d}-{1 + n % 28:02d}",
            "identifier": [{"system": "urn:bench:mrn", "value": f"MRN-{n:07d}"}],
            "name": [{"use": "official", "family": f"Family{n}", "given": [f"Given{n}"]}]}


def observation_content(patient: str, n: int) -> dict[str, Any]:
    """A heart-rate vital sign, as a device or an EHR would store it (a few index rows each)."""
    return {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
                 "text": "Heart rate"},
        "subject": {"reference": patient},
        "effectiveDateTime": f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:00Z",
        "valueQuantity": {"value": 55 + n % 50, "unit": "beats/minute", "system": "http://unitsofmeasure.org",
                          "code": "/min"},
    }


def bulk_store(project_id: Any, contents: list[dict[str, Any]]) -> list[Any]:
    """Store resources as ``Repository.create`` does (same meta, index values and compartment),
    in bulk: one ``Resource``, one ``ResourceVersion`` and the ``SearchIndex`` rows of each."""
    from django.db import transaction

    from fhir_api.models import Resource, ResourceVersion, SearchIndex
    from fhir_api.repository import _now, _with_meta
    from fhir_api.search_params import compartment, index_rows, index_values

    now = _now()
    rows, indexes = [], []
    for content in contents:
        resource_type = content["resourceType"]
        resource_id = str(uuid.uuid4())
        stored = _with_meta(resource_type, resource_id, copy.deepcopy(content), 1, now)
        index = index_values(resource_type, stored)
        rows.append(Resource(project_id=project_id, resource_type=resource_type, resource_id=resource_id,
                             version_id=1, last_updated=now, content=stored,
                             patient=compartment(resource_type, resource_id, index)))
        indexes.append(index)
    with transaction.atomic():
        Resource.objects.bulk_create(rows, batch_size=2000)
        ResourceVersion.objects.bulk_create(
            [ResourceVersion(resource=row, version_id=1, last_updated=now, content=row.content) for row in rows],
            batch_size=2000)
        SearchIndex.objects.bulk_create(
            [SearchIndex(resource=row, project_id=project_id, resource_type=row.resource_type, name=name, value=value,
                         number=number)
             for row, index in zip(rows, indexes, strict=True)
             for name, value, number in index_rows(row.resource_type, index)],
            batch_size=5000)
    return rows


def add_patients(project_id: Any, patients: int, per_patient: int, start: int) -> None:
    """``patients`` Patients (numbered from ``start``) with ``per_patient`` Observations each."""
    for first in range(0, patients, 20):  # 20 patients a transaction
        batch = range(start + first, start + min(first + 20, patients))
        stored = bulk_store(project_id, [patient_content(n) for n in batch])
        bulk_store(project_id, [observation_content(f"Patient/{row.resource_id}", n * per_patient + i)
                                for n, row in zip(batch, stored, strict=True) for i in range(per_patient)])


def check_bulk_path(project_id: Any) -> None:
    """The bulk path stores what ``Repository.create`` stores: same index rows, compartment, content."""
    from fhir_api.models import Resource
    from fhir_api.repository import Repository

    patient = Repository(project_id, None).create("Patient", patient_content(10**6))
    contents = [patient_content(10**6), observation_content(f"Patient/{patient.resource_id}", 7)]
    for content, bulk in zip(contents, bulk_store(project_id, contents), strict=True):
        real = Repository(project_id, None).create(content["resourceType"], content)  # validated, as the API does

        def stored(row: Resource) -> tuple[Any, ...]:
            row = Resource.objects.get(pk=row.pk)
            index = sorted(row.index_entries.values_list("project_id", "resource_type", "name", "value"))
            body = {k: v for k, v in row.content.items() if k not in ("id", "meta")}
            own = f"Patient/{row.resource_id}"
            return (row.resource_type, row.patient.replace(own, "self"), row.versions.count(), body,
                    [entry if entry[3] != own else (*entry[:3], "self") for entry in index])

        if stored(real) != stored(bulk):
            sys.exit(f"the bulk path differs from Repository.create:\n{stored(real)}\n{stored(bulk)}")


def seed(args: argparse.Namespace, suffix: str) -> dict[str, Any]:
    """Project 1: the Patient member under the patient policy with ``--own`` Observations, and other
    patients; project 2: more patients. Other Observations: ``--others``, half in each project."""
    from fhir_api.models import Resource
    from fhir_api.repository import Repository
    from medplum_auth import authorization, services

    project = services.create_project(f"Bench FHIR {suffix}")
    other_project = services.create_project(f"Bench FHIR other {suffix}")
    policy = services.create_access_policy(project, "Patient policy", PATIENT_POLICY)
    spa, _none = services.create_client(project, "Bench SMART app", public=True, redirect_uris=[REDIRECT_URI])
    email = f"bench.fhir.patient.{suffix}@example.org"
    invitation = services.invite_member(project, email, profile_type="Patient", first_name="Bench",
                                        last_name="Patient", password=PASSWORD, access_policy=policy)
    authorization.record_consent(invitation.user, spa, SCOPE.split())
    patient = invitation.membership.profile  # Patient/<id>, created by the invite (fhir_api.profiles)
    assert Resource.objects.filter(project=project, resource_type="Patient",
                                   resource_id=invitation.membership.profile_id).exists()
    repository = Repository(project.pk, None)
    for i in range(args.own):
        repository.create("Observation", observation_content(patient, i))
    check_bulk_path(other_project.pk)
    seeded = {"project": project.pk, "other_project": other_project.pk, "spa_id": spa.client_id, "email": email,
              "patient": patient, "patient_id": invitation.membership.profile_id, "next_patient": 0}
    grow(seeded, args.others, args.patients)
    return seeded


def grow(seeded: dict[str, Any], observations: int, patients: int) -> None:
    """``observations`` more Observations, not the patient's: half over ``patients`` new patients of
    the project, half over as many in the other project."""
    per_patient = max(1, observations // (2 * patients))
    for project in (seeded["project"], seeded["other_project"]):
        add_patients(project, patients, per_patient, seeded["next_patient"])
        seeded["next_patient"] += patients
    vacuum_analyze()


def vacuum_analyze() -> None:
    """As autovacuum would eventually: fresh statistics and visibility map for the bulk-loaded tables."""
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("fhir_api_resource", "fhir_api_resourceversion", "fhir_api_searchindex"):
            cursor.execute(f"VACUUM (ANALYZE) {table}")


def data_counts(seeded: dict[str, Any]) -> dict[str, int]:
    """What the database holds, by query, and the check that the index rows exist."""
    from django.db import connection

    sql = """
SELECT
  count(*) FILTER (WHERE r.patient = %(patient)s AND r.project_id = %(project)s),
  count(*) FILTER (WHERE r.patient <> %(patient)s AND r.project_id = %(project)s),
  count(*) FILTER (WHERE r.project_id <> %(project)s),
  count(*) FILTER (WHERE NOT EXISTS (
    SELECT 1 FROM fhir_api_searchindex s
    WHERE s.resource_id = r.id AND s.project_id = r.project_id AND s.resource_type = r.resource_type
      AND s.name = 'subject' AND s.value = r.patient))
FROM fhir_api_resource r WHERE r.resource_type = 'Observation'"""
    with connection.cursor() as cursor:
        cursor.execute(sql, {"patient": seeded["patient"], "project": seeded["project"]})
        own, others_here, others_there, unindexed = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM fhir_api_resource WHERE resource_type = 'Patient'")
        patients = cursor.fetchone()[0]
        cursor.execute("SELECT count(*), count(*) FILTER (WHERE resource_type = 'Observation' AND name = 'subject') "
                       "FROM fhir_api_searchindex")
        index_rows, subject_rows = cursor.fetchone()
    if unindexed:
        sys.exit(f"{unindexed} Observations lack their subject index row")
    return {"own_observations": own, "other_observations_same_project": others_here,
            "other_observations_other_project": others_there, "other_observations": others_here + others_there,
            "patients": patients, "search_index_rows": index_rows, "observation_subject_index_rows": subject_rows}


# --- in process: SQL per request, the search's plan ------------------------------------------------

def paths(seeded: dict[str, Any], count: int) -> dict[str, str]:
    return {"read": f"/fhir/R4/Patient/{seeded['patient_id']}",
            "search": "/fhir/R4/Observation?" + urlencode({"subject": seeded["patient"], "_count": count})}


def dollar_placeholders(sql: str) -> str:
    """Django's ``%s`` placeholders (``%%`` for a literal ``%``) as PostgreSQL's ``$1``, ``$2`` …"""
    numbered = iter(range(1, sql.count("%s") + 1))
    return re.sub(r"%s|%%", lambda m: "%" if m.group() == "%%" else f"${next(numbered)}", sql)


def sql_and_plans(seeded: dict[str, Any], token: str, count: int, issuer: str) -> dict[str, Any]:
    """Statements per request (Django's test client, same settings and database, after one warm-up
    pass), and the search's statements on ``fhir_api_resource`` with ``EXPLAIN (ANALYZE, BUFFERS)``:

    * ``custom``: the statement with its values in it, as PostgreSQL plans it without prepared
      statements (and for the first executions of a prepared one);
    * ``generic``: the prepared statement's generic plan (``plan_cache_mode = force_generic_plan``),
      which PostgreSQL may switch to after 5 executions on a connection (``DB_PREPARED_STATEMENTS``).
    """
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST=issuer.split("//", 1)[1])
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_ACCEPT": FHIR_JSON}
    counts: dict[str, dict[str, int]] = {}
    statements: list[tuple[str, Any]] = []

    def keep(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if "fhir_api_resource" in sql:
            statements.append((sql, params))
        return execute(sql, params, many, context)

    for _attempt in range(2):
        for name, path in paths(seeded, count).items():
            statements.clear()
            with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(keep):
                response = client.get(path, **headers)
            assert response.status_code == 200, (name, response.status_code, response.content[:300])
            counts[name] = statement_counts(captured.captured_queries)
            if name == "search":
                searched = list(statements)
    plans = []
    with connection.cursor() as cursor:
        for sql, params in searched:
            literal = connection.ops.compose_sql(sql, params)
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + literal)
            custom = [row[0] for row in cursor.fetchall()]
            prepared = dollar_placeholders(sql)
            cursor.execute("SET plan_cache_mode = force_generic_plan")
            cursor.execute("PREPARE fhir_bench_search AS " + prepared)
            arguments = connection.ops.compose_sql(", ".join(["%s"] * len(params)), params)
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE fhir_bench_search({arguments})")
            generic = [row[0] for row in cursor.fetchall()]
            cursor.execute("DEALLOCATE fhir_bench_search")
            cursor.execute("RESET plan_cache_mode")
            plans.append({"sql": literal, "plan": custom, "generic_plan": generic})
    connection.close()
    return {"sql_per_request": counts, "search_plans": plans}


# --- main ----------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_arguments(parser)
    parser.add_argument("--own", type=int, default=50, help="the patient's own Observations (default 50)")
    parser.add_argument("--others", type=int, default=2000,
                        help="Observations of other patients before the growth (default 2000)")
    parser.add_argument("--patients", type=int, default=10,
                        help="other patients per project before the growth (default 10)")
    parser.add_argument("--growth", type=int, default=10, help="growth factor of the other data (default 10)")
    parser.add_argument("--count", type=int, default=20, help="_count of the search (default 20)")
    database_arguments(parser)
    profile_arguments(parser)
    args = parser.parse_args()

    check_tools(args)
    database_url, port, bare_port, env = prepare_django(args)
    issuer = f"http://127.0.0.1:{port}"
    from django.conf import settings

    log(f"seeding ({args.own} own Observations, {args.others} others)")
    seeded = seed(args, secrets.token_hex(4))
    data = {"before": data_counts(seeded)}
    log(f"data: {data['before']}")
    database = {**commit_latency(database_url), "synchronous_commit": database_setting("synchronous_commit")}

    app = bare = None
    try:
        app, bare, workdir = start_servers(env, port, bare_port, args.workers, "fhir_bench.")
        db_name = str(settings.DATABASES["default"]["NAME"])
        results, inspected = run_scenarios(args, port, bare_port, app.pid, bare.pid, db_name, seeded, data,
                                           workdir, issuer)
    finally:
        stop(app)
        stop(bare)
    report(args, results, inspected, data, database)


def run_scenarios(args: argparse.Namespace, port: int, bare_port: int, app_pid: int, bare_pid: int, db_name: str,
                  seeded: dict[str, Any], data: dict[str, Any], workdir: Path, issuer: str,
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    # A real code flow: the patient signs in, the app gets a token for patient/*.rs.
    cookie = sign_in(port, seeded["email"], seeded["spa_id"])
    token_response, _a, _t = authorize_cycle(port, cookie, seeded["spa_id"], SCOPE)
    token = token_response["access_token"]
    assert "patient/*.rs" in token_response.get("scope", ""), token_response
    headers = {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON}
    urls = paths(seeded, args.count)
    check_answers(port, headers, seeded, urls, args)

    inspected = {"before": sql_and_plans(seeded, token, args.count, issuer)}
    t = args.wrk_threads
    scripts = {name: lua_script("GET", url, headers) for name, url in urls.items()}
    scripts["search_grown"] = scripts["search"]
    bare_script = lua_script("GET", "/", {})
    results: dict[str, Any] = {}
    profiles: dict[str, Any] = {}

    def load(name: str, seconds: float, part: str) -> dict[str, Any]:
        def server() -> set[int]:
            return set(worker_pids(bare_pid) if name == "bare" else worker_pids(app_pid) + database_backends(db_name))

        if name == "bare":
            return with_server_cpu(lambda: run_wrk(bare_port, bare_script, workdir, "bare", seconds,
                                                   args.connections, t), server)
        return with_server_cpu(lambda: run_wrk(port, scripts[name], workdir, name, seconds, args.connections, t),
                               server)

    for name in ("read", "search", "search_grown"):
        if name == "search_grown":
            extra = args.others * (args.growth - 1)
            log(f"growing the other data {args.growth}x (+{extra} Observations)")
            grow(seeded, extra, args.patients * (args.growth - 1))
            data["after"] = data_counts(seeded)
            log(f"data: {data['after']}")
            check_answers(port, headers, seeded, urls, args)
            inspected["after"] = sql_and_plans(seeded, token, args.count, issuer)
        results[name] = interleaved(load, name, args)
        results[name].pop("_parts")
        if args.profile:
            profiles[name] = profile(name, app_pid, args, workdir,
                                     lambda n=name: load(n, args.profile_seconds, "profile"))
    if profiles:
        results["_profiles"] = profiles
    return results, inspected


def check_answers(port: int, headers: dict[str, str], seeded: dict[str, Any], urls: dict[str, str],
                  args: argparse.Namespace) -> None:
    """Each scenario answers right once, and the token sees nothing of other patients."""
    status, _h, body = request(port, "GET", urls["read"], headers=headers)
    assert status == 200 and json.loads(body)["id"] == seeded["patient_id"], (status, body[:300])
    status, _h, body = request(port, "GET", urls["search"], headers=headers)
    bundle = json.loads(body)
    assert status == 200 and bundle["total"] == args.own, (status, body[:300])
    assert len(bundle["entry"]) == min(args.count, args.own), len(bundle["entry"])
    assert all(e["resource"]["subject"]["reference"] == seeded["patient"] for e in bundle["entry"])
    from fhir_api.models import Resource

    for project in (seeded["project"], seeded["other_project"]):
        other = Resource.objects.filter(project_id=project, resource_type="Patient").exclude(
            resource_id=seeded["patient_id"]).values_list("resource_id", flat=True).first()
        status, _h, body = request(port, "GET", f"/fhir/R4/Patient/{other}", headers=headers)
        assert status == 404, (status, body[:300])
        query = urlencode({"subject": f"Patient/{other}"})
        status, _h, body = request(port, "GET", f"/fhir/R4/Observation?{query}", headers=headers)
        assert status == 200 and json.loads(body)["total"] == 0, (status, body[:300])


def prepared_statements() -> bool:
    """Whether the app's settings (the same in this process) prepare statements (DB_PREPARED_STATEMENTS)."""
    from django.conf import settings

    options = settings.DATABASES["default"].get("OPTIONS", {})
    return bool(options.get("server_side_binding")) and options.get("prepare_threshold") is not None


def report(args: argparse.Namespace, results: dict[str, Any], inspected: dict[str, Any], data: dict[str, Any],
           database: dict[str, Any]) -> None:
    profiles = results.pop("_profiles", {})
    sql = inspected["before"]["sql_per_request"]
    rows = []
    for name, result in results.items():
        ratio = result["rate"] / result["bare"]["rate"]
        rows.append({
            "scenario": name, "label": LABELS[name], "unit": "req/s",
            **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items() if k != "bare"},
            "bare_rate": round(result["bare"]["rate"], 1), "bare_p99_ms": round(result["bare"]["p99_ms"], 2),
            "ratio": round(ratio, 3), "target_ratio": TARGETS[name], "ratio_met": ratio >= TARGETS[name],
            "bare_server_cpu_ms": round(result["bare"]["server_cpu_ms"], 3),
            "bare_server_cores": result["bare"]["server_cores"],
            "cpu_ratio": round(result["bare"]["server_cpu_ms"] / result["server_cpu_ms"], 3)
            if result["server_cpu_ms"] else None,
            "sql_statements": sql["search" if name == "search_grown" else name]["statements"],
        })
    by_name = {r["scenario"]: r for r in rows}
    flatness: dict[str, Any] = {}
    if "search" in by_name and "search_grown" in by_name:
        base, grown = by_name["search"], by_name["search_grown"]
        flatness = {
            "rate_ratio": round(grown["rate"] / base["rate"], 3),
            "bare_normalised_ratio": round(grown["ratio"] / base["ratio"], 3),
            "cpu_ms_ratio": round(grown["server_cpu_ms"] / base["server_cpu_ms"], 3),
            "target": f"within {FLATNESS_TARGET:.0%}",
        }
        # Judged as every figure here: against the bare view of the adjacent slices (the grown
        # search runs a minute after the first, and a shared machine drifts meanwhile).
        flatness["met"] = abs(1 - flatness["bare_normalised_ratio"]) <= FLATNESS_TARGET
    summary = {
        "connections": args.connections, "seconds_per_scenario": args.duration, "rounds": args.rounds,
        "gunicorn_workers": args.workers, "worker_class": "sync", "wrk_threads": args.wrk_threads,
        "cpus": os.cpu_count(), "python": platform.python_version(), "database_timings": database,
        "prepared_statements": prepared_statements(), "scope": SCOPE, "policy": PATIENT_POLICY,
        "data": data, "sql_per_request": sql, "flatness": flatness,
        "bare_rate_min": min(r["bare_rate"] for r in rows), "bare_rate_max": max(r["bare_rate"] for r in rows),
        "all_targets_met": all(r["ratio_met"] for r in rows) and bool(flatness.get("met")),
    }
    if args.json:
        print(json.dumps({"summary": summary, "scenarios": rows, "search_plans": {
            k: v["search_plans"] for k, v in inspected.items()}, "profiles": profiles}, indent=2))
        return
    for when, info in inspected.items():
        counts = data.get(when, {})
        print(f"\nsearch SQL and plan, {when} the growth ({counts.get('other_observations')} other Observations, "
              f"{counts.get('search_index_rows')} index rows):")
        for item in info["search_plans"]:
            print(f"\n  {item['sql']}\n")
            for title, key in (("with its values (custom plan)", "plan"), ("prepared (generic plan)", "generic_plan")):
                print(f"   {title}:")
                for line in item[key]:
                    print(f"    {line}")
    d0, d1 = data["before"], data.get("after", {})
    print(f"\ndata: patient's own Observations {d0['own_observations']}; other Observations "
          f"{d0['other_observations']} -> {d1.get('other_observations')} "
          f"(same project {d0['other_observations_same_project']} -> {d1.get('other_observations_same_project')}, "
          f"other project {d0['other_observations_other_project']} -> {d1.get('other_observations_other_project')}); "
          f"Patients {d0['patients']} -> {d1.get('patients')}; SearchIndex rows {d0['search_index_rows']} -> "
          f"{d1.get('search_index_rows')}; every Observation has its subject index row")
    print(f"\n{args.connections} connections, gunicorn {args.workers} sync workers, {os.cpu_count()} CPUs; each "
          f"scenario {args.duration:g} s in {args.rounds} slices, each after an equal slice of the bare view; "
          f"ratio = scenario rate / bare rate of those slices; token scope {SCOPE!r}, patient policy\n")
    binding = ("server-side binding, prepared statements" if summary["prepared_statements"]
               else "client-side binding, no prepared statements")
    print(f"PostgreSQL: synchronous_commit {database['synchronous_commit']}; round trip "
          f"{database['select_1_ms']:.2f} ms; app: {binding}\n")
    print(f"{'scenario':<36}{'rate':>8} {'bare/s':>7} {'ratio':>6} {'target':>6}  {'p50 ms':>6} {'p99 ms':>6}  "
          f"{'cpu ms':>6} {'cores':>5} {'cpu ratio':>9}  {'SQL':>3} {'errors':>6}  met")
    for r in rows:
        print(f"{r['label']:<36}{r['rate']:>8.1f} {r['bare_rate']:>7.0f} {r['ratio']:>6.3f} {r['target_ratio']:>6.2f}"
              f"  {r['p50_ms']:>6.2f} {r['p99_ms']:>6.2f}  {r['server_cpu_ms']:>6.2f} {r['server_cores']:>5.2f} "
              f"{r['cpu_ratio'] or 0:>9.3f}  {r['sql_statements']:>3} {r['errors']:>6}  "
              f"{'yes' if r['ratio_met'] else 'NO'}")
        if r["errors"]:
            print(f"{'':<36}  errors: {r['error_detail']}")
    if flatness:
        print(f"\nflatness (other data x{args.growth}): search ratio-to-bare grown / before = "
              f"{flatness['bare_normalised_ratio']:.3f} (target {flatness['target']}: "
              f"{'yes' if flatness['met'] else 'NO'}); raw rate grown / before = {flatness['rate_ratio']:.3f}; "
              f"cpu ms grown / before = {flatness['cpu_ms_ratio']:.3f}")
    print("cpu ms = server CPU per request (gunicorn workers + their PostgreSQL backends); cores = that CPU per "
          f"second, of {os.cpu_count()}; cpu ratio = bare view's cpu ms / this one's; SQL = statements per request")
    print(f"\nbare view: {summary['bare_rate_min']:.0f}-{summary['bare_rate_max']:.0f} req/s. "
          f"All targets met: {'yes' if summary['all_targets_met'] else 'no'}")
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
