"""Observation write and search cost in process, for comparing two trees of this project.

Issue 18 moved the search parameters from hand-written extractors to the R4 SearchParameter data
(many more parameters per type, evaluated on every write); its target is that writing and
searching an Observation cost within 20% of before. This script measures, on PostgreSQL through
the Django test client (the whole request: authentication, policy, validation, index, SQL):

* ``create``: ``POST /fhir/R4/Observation`` (a blood pressure with two components);
* ``search``: ``GET /fhir/R4/Observation?subject=Patient/<id>&code=<code>&_count=20`` over
  ``--observations`` stored Observations;
* ``index``: ``index_values`` alone (the in-memory extraction), per Observation.

Run it on each tree back to back, alternating, on the same database server, and compare::

    DATABASE_URL=postgres://medplum:medplum@127.0.0.1:5432/<db> \\
        .venv/bin/python bench/fhir_write_bench.py --tree /work/main --json
    DATABASE_URL=... .venv/bin/python bench/fhir_write_bench.py --tree . --json

The data goes into a database beside ``DATABASE_URL``'s (``<db>_wbench``), created, migrated and
dropped by the script as the test runner does its test database.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", default=".", help="the project tree to measure (its code is imported)")
    parser.add_argument("--observations", type=int, default=2000)
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--searches", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tree = Path(args.tree).resolve()
    sys.path.insert(0, str(tree))
    os.chdir(tree)
    os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 50)
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django
    from django.conf import settings

    django.setup()
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases

    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["testserver"]
    if connection.vendor != "postgresql":
        sys.exit("set DATABASE_URL to a PostgreSQL database")
    # Its own test database (not the test runner's ``test_<db>``), so a test run beside it is not disturbed.
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = f"{settings.DATABASES['default']['NAME']}_wbench"
    old = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    try:
        result = run(args)
    finally:
        teardown_databases(old, verbosity=0)
    result["tree"] = str(tree)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<28} {value}")


def blood_pressure(patient: str, n: int) -> dict:
    quantity = {"system": "http://unitsofmeasure.org", "code": "mm[Hg]"}
    return {"resourceType": "Observation", "status": "final", "subject": {"reference": patient},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "effectiveDateTime": f"2024-01-{n % 28 + 1:02d}T10:00:00Z",
            "identifier": [{"system": "urn:bench", "value": str(n)}],
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                 "valueQuantity": {**quantity, "value": 100 + n % 40}},
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                 "valueQuantity": {**quantity, "value": 60 + n % 30}}]}


def timed(count: int, call, clock=time.perf_counter) -> list[float]:
    out = []
    for n in range(count):
        start = clock()
        call(n)
        out.append((clock() - start) * 1000)
    return out


def run(args: argparse.Namespace) -> dict:
    from django.test import Client

    from fhir_api.repository import Repository
    from fhir_api.search_params import index_values
    from medplum_auth import tokens
    from tests.factories import ClientApplicationFactory, ProjectFactory
    from tests.fhir.conftest import mint

    project = ProjectFactory(name="bench")
    app = ClientApplicationFactory(project=project)
    token = mint(client=app, scope="system/*.cruds", lifetime=3600)
    tokens.clear_cache()
    repo = Repository(project.pk, None)
    patients = [repo.create("Patient", {"resourceType": "Patient"}).resource_id for _ in range(20)]
    for n in range(args.observations):
        repo.create("Observation", blood_pressure(f"Patient/{patients[n % 20]}", n))
    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_ACCEPT": "application/fhir+json"}

    def create(n: int) -> None:
        response = client.post("/fhir/R4/Observation", json.dumps(blood_pressure(f"Patient/{patients[0]}", n)),
                               content_type="application/fhir+json", **headers)
        assert response.status_code == 201, response.content

    def search(n: int) -> None:
        response = client.get("/fhir/R4/Observation", {"subject": f"Patient/{patients[n % 20]}",
                                                       "code": "http://loinc.org|85354-9", "_count": "20"}, **headers)
        assert response.status_code == 200 and response.json()["total"] > 0, response.content

    content = blood_pressure(f"Patient/{patients[0]}", 1)
    timed(20, create)
    timed(20, search)  # warm-up
    writes = timed(args.writes, create)
    searches = timed(args.searches, search)
    # This process's CPU alone (the server side of the request: Django, validation, index, SQL
    # building), less disturbed than wall time by other work on a shared machine.
    write_cpu = timed(args.writes, lambda n: create(n + args.writes), time.process_time)
    search_cpu = timed(args.searches, search, time.process_time)
    extraction = timed(2000, lambda n: index_values("Observation", content))
    return {"create_ms_median": round(statistics.median(writes), 3),
            "search_ms_median": round(statistics.median(searches), 3),
            "create_cpu_ms_mean": round(statistics.mean(write_cpu), 3),
            "search_cpu_ms_mean": round(statistics.mean(search_cpu), 3),
            "index_values_ms_median": round(statistics.median(extraction), 4),
            "index_rows_per_observation": index_row_count(content)}


def index_row_count(content: dict) -> int:
    """``SearchIndex`` rows a write stores for ``content`` (trees before ``index_rows``: one per value)."""
    from fhir_api import search_params

    index = search_params.index_values("Observation", content)
    if hasattr(search_params, "index_rows"):
        return sum(1 for _ in search_params.index_rows("Observation", index))
    return sum(len(v) for v in index.values())


if __name__ == "__main__":
    main()
