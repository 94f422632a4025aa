"""Batch and transaction Bundles against the single requests they replace, in one run.

One run (machinery in ``bench/harness.py``): start PostgreSQL if it is down, (re)create the
``medplum_bench`` database (or ``--database-url``), migrate, seed a project, a confidential client
(a real ``client_credentials`` token over HTTP) and ``--reads`` Patients, start ``config.wsgi``
under gunicorn, then, on one keep-alive connection as an SDK sends them, in interleaved rounds:

* ``20 reads``: ``GET /fhir/R4/Patient/<id>`` for each seeded Patient, one request each;
* ``batch of 20 reads``: one ``POST /fhir/R4`` ``batch`` Bundle of the same 20 GETs (what
  ``@medplum/core``'s ``autoBatchTime`` sends);
* ``50 creates``: ``POST /fhir/R4/Patient`` 50 times;
* ``transaction of 50 creates``: one ``transaction`` Bundle of the same 50 POSTs.

Each figure is the wall time of one unit (20 reads, one batch, …) and the server CPU it cost
(gunicorn workers plus their PostgreSQL backends, from ``/proc``); the ratio is the Bundle's over
the single requests' measured in the same rounds. Every response is checked (status, entries).

    .venv/bin/python bench/bundle_bench.py            # table
    .venv/bin/python bench/bundle_bench.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import statistics
import sys
import tempfile
import time
from base64 import b64encode
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench.harness`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (  # noqa: E402
    cpu_seconds,
    database_arguments,
    database_backends,
    log,
    prepare_django,
    request,
    start_gunicorn,
    stop,
    worker_pids,
)

FHIR_JSON = "application/fhir+json"


def patient(i: int) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": f"Bench{i}", "given": ["Batch"]}],
            "identifier": [{"system": "urn:bench", "value": f"b-{i}"}], "gender": "female", "birthDate": "1980-01-01"}


def seed(port: int, reads: int) -> tuple[str, list[str]]:
    from fhir_api.repository import Repository
    from medplum_auth import services

    services.ensure_signing_key()
    project = services.create_project(f"Bundle bench {secrets.token_hex(4)}")  # --database-url may be reused
    client, secret = services.create_client(project, "bench backend", public=False)
    repo = Repository(project.pk, None)
    ids = [repo.create("Patient", patient(i)).resource_id for i in range(reads)]
    basic = b64encode(f"{client.client_id}:{secret}".encode()).decode()
    status, _h, body = request(port, "POST", "/oauth2/token", "grant_type=client_credentials",
                               {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"})
    if status != 200:
        sys.exit(f"client_credentials failed: {status} {body[:300]!r}")
    return json.loads(body)["access_token"], ids


class Driver:
    """One keep-alive connection, as an SDK uses it; every response checked."""

    def __init__(self, port: int, token: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON, "Content-Type": FHIR_JSON}

    def send(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        data = json.dumps(body) if body is not None else None
        status, _h, raw = request(0, method, path, data, self.headers, conn=self.conn)
        if status != expect:
            sys.exit(f"{method} {path}: {status} {raw[:300]!r}")
        return json.loads(raw)


def scenarios(driver: Driver, ids: list[str], creates: int) -> dict[str, Any]:
    def reads() -> None:
        for resource_id in ids:
            driver.send("GET", f"/fhir/R4/Patient/{resource_id}")

    def batch() -> None:
        body = driver.send("POST", "/fhir/R4", {"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "GET", "url": f"Patient/{i}"}} for i in ids]})
        if [e["response"]["status"] for e in body["entry"]] != ["200"] * len(ids):
            sys.exit("batch: an entry failed")

    def singles() -> None:
        for i in range(creates):
            driver.send("POST", "/fhir/R4/Patient", patient(i), expect=201)

    def transaction() -> None:
        body = driver.send("POST", "/fhir/R4", {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}", "request": {"method": "POST", "url": "Patient"},
             "resource": patient(i)} for i in range(creates)]})
        if [e["response"]["status"] for e in body["entry"]] != ["201"] * creates:
            sys.exit("transaction: an entry failed")

    return {f"{len(ids)} reads": reads, f"batch of {len(ids)} reads": batch,
            f"{creates} creates": singles, f"transaction of {creates} creates": transaction}


def measure(action: Any, server: Any) -> tuple[float, float]:
    pids = server()
    before = {pid: cpu_seconds(pid) or 0.0 for pid in pids}
    started = time.perf_counter()
    action()
    wall = time.perf_counter() - started
    after = {pid: cpu_seconds(pid) for pid in pids | server()}
    return wall, sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items() if cpu is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=15, help="measured units per scenario (default 15)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured units per scenario first (default 3)")
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--creates", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    database_arguments(parser)
    args = parser.parse_args()

    database_url, port, _bare_port, env = prepare_django(args)
    from django.conf import settings

    database = settings.DATABASES["default"]["NAME"]
    app = start_gunicorn("config.wsgi:application", port, args.workers, env,
                         Path(tempfile.mkdtemp(prefix="bundle-bench-")) / "gunicorn-app.log")
    try:
        token, ids = seed(port, args.reads)
        driver = Driver(port, token)
        units = scenarios(driver, ids, args.creates)

        def server() -> set[int]:
            return {*worker_pids(app.pid), *database_backends(database)}

        for action in units.values():
            for _ in range(args.warmup):
                action()
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in units}
        log(f"{args.rounds} rounds of {', '.join(units)}")
        for _ in range(args.rounds):  # interleaved: the machine's drift hits every scenario alike
            for name, action in units.items():
                samples[name].append(measure(action, server))
    finally:
        stop(app)

    results = {name: {"wall_ms": statistics.median(w for w, _ in s) * 1000,
                      "cpu_ms": statistics.mean(c for _, c in s) * 1000} for name, s in samples.items()}
    names = list(units)
    for single, bundle in ((names[0], names[1]), (names[2], names[3])):
        results[bundle]["wall_ratio"] = results[bundle]["wall_ms"] / results[single]["wall_ms"]
        results[bundle]["cpu_ratio"] = results[bundle]["cpu_ms"] / results[single]["cpu_ms"]
    if args.json:
        print(json.dumps({"database": database_url.rsplit("@", 1)[-1], "rounds": args.rounds, "results": results},
                         indent=2))
        return
    print(f"{'scenario':<30} {'wall ms (median)':>17} {'server cpu ms':>14} {'wall ratio':>11} {'cpu ratio':>10}")
    for name, r in results.items():
        ratios = (f"{r['wall_ratio']:>11.2f} {r['cpu_ratio']:>10.2f}" if "wall_ratio" in r else "")
        print(f"{name:<30} {r['wall_ms']:>17.1f} {r['cpu_ms']:>14.1f} {ratios}")


if __name__ == "__main__":
    main()
