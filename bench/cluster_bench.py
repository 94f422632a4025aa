"""Two app instances against one, on the same machine and the same PostgreSQL.

Scenarios: ``client_credentials`` (client authentication, a signed access token, a login row
written) and the discovery document produced by Django every time (``?bench=uncached``: no
database). The baseline is **one** gunicorn instance of ``config.wsgi`` (``--workers``, sync)
loaded by one wrk at ``--connections``; the scenario is **two** such instances on one database,
each loaded by its own wrk with half the connections at the same time (a perfect load balancer
with no cost: a real one, nginx or the test's Python proxy, only adds its own CPU). The ratio is
the two instances' summed rate over the one instance's, in slices interleaved one/two/one/two.
A third server, one instance with twice the workers, tells instances from worker processes.

Both instances share the cache through Redis when ``--redis-url`` is given (as in production);
otherwise each has its in-process cache (the figures do not depend on it: a successful token
request reads the throttle counters once and writes nothing).

    .venv/bin/python bench/cluster_bench.py [--duration 10] [--workers 2] [--connections 8] [--json]

Why the ratio is what it is is in bench/README.md ("two instances vs one").
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import form, log, lua_script, run_wrk, start_gunicorn, stop  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    harness.common_arguments(parser)
    harness.database_arguments(parser)
    parser.add_argument("--redis-url", default="", help="shared cache of both instances (REDIS_URL)")
    args = parser.parse_args()
    args.profile = False
    harness.check_tools(args)
    database_url, port_a, port_b, env = harness.prepare_django(args)
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url

    from medplum_auth import services

    services.rotate_signing_keys()  # an active key under this run's SECRET_KEY, even in a reused database
    project = services.create_project(f"Cluster bench {harness.secrets.token_hex(4)}")
    client, secret = services.create_client(project, "Bench backend", redirect_uris=[harness.REDIRECT_URI])
    basic = "Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()
    body, headers = form({"grant_type": "client_credentials"})
    scripts = {
        "client_credentials": lua_script("POST", "/oauth2/token", {**headers, "Authorization": basic}, body),
        "discovery through Django": lua_script("GET", "/.well-known/openid-configuration?bench=uncached", {}),
    }

    workdir = Path(harness.tempfile.mkdtemp(prefix="cluster-bench-"))
    a = start_gunicorn("config.wsgi:application", port_a, args.workers, env, workdir / "a.log")
    b = start_gunicorn("config.wsgi:application", port_b, args.workers, env, workdir / "b.log")
    port_c = harness.free_port()
    c = start_gunicorn("config.wsgi:application", port_c, 2 * args.workers, env, workdir / "c.log")
    results: dict[str, Any] = {"workers_per_instance": args.workers, "connections": args.connections,
                               "cpus": harness.os.cpu_count(), "scenarios": {}}
    try:
        for port in (port_a, port_b, port_c):  # each scenario answers 200 on every server before it is loaded
            for method, path, data, extra in (("POST", "/oauth2/token", body, {**headers, "Authorization": basic}),
                                              ("GET", "/.well-known/openid-configuration?bench=uncached", None, {})):
                status, _h, answer = harness.request(port, method, path, data, extra)
                if status != 200:
                    sys.exit(f"{method} {path} on :{port} answered {status}: {answer[:300]!r}")
        for name, script in scripts.items():
            slice_seconds = args.duration / args.rounds
            one_rates, two_rates, wide_rates, errors = [], [], [], 0
            run_wrk(port_a, script, workdir, "warmup-a", args.warmup, args.connections, 1)
            run_wrk(port_b, script, workdir, "warmup-b", args.warmup, args.connections, 1)
            for _ in range(args.rounds):
                one = run_wrk(port_a, script, workdir, "one", slice_seconds, args.connections, args.wrk_threads)
                pair: list[dict[str, Any]] = [{}, {}]

                def drive(i: int, port: int) -> None:
                    pair[i] = run_wrk(port, script, workdir, f"two-{i}", slice_seconds,  # noqa: B023
                                      max(1, args.connections // 2), args.wrk_threads)

                threads = [threading.Thread(target=drive, args=(i, p)) for i, p in enumerate((port_a, port_b))]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wide = run_wrk(port_c, script, workdir, "wide", slice_seconds, args.connections, args.wrk_threads)
                wide_rates.append(wide["rate"])
                errors += wide["errors"]
                one_rates.append(one["rate"])
                two_rates.append(pair[0]["rate"] + pair[1]["rate"])
                errors += one["errors"] + pair[0]["errors"] + pair[1]["errors"]
            one_rate, two_rate = sum(one_rates) / len(one_rates), sum(two_rates) / len(two_rates)
            wide_rate = sum(wide_rates) / len(wide_rates)
            results["scenarios"][name] = {"one_instance_per_s": round(one_rate, 1),
                                          "two_instances_per_s": round(two_rate, 1),
                                          "ratio": round(two_rate / one_rate, 2),
                                          "one_instance_double_workers_per_s": round(wide_rate, 1),
                                          "double_workers_ratio": round(wide_rate / one_rate, 2), "errors": errors}
            log(f"{name}: one {one_rate:.0f}/s, two {two_rate:.0f}/s, ratio {two_rate / one_rate:.2f}")
    finally:
        stop(a)
        stop(b)
        stop(c)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'scenario':26} {'one/s':>7} {'two/s':>7} {'ratio':>6} {'one, 2x workers/s':>18} {'ratio':>6}  "
          f"({results['cpus']} CPUs, {args.workers} workers per instance, {args.connections} connections)")
    for name, row in results["scenarios"].items():
        print(f"{name:26} {row['one_instance_per_s']:>7} {row['two_instances_per_s']:>7} {row['ratio']:>6} "
              f"{row['one_instance_double_workers_per_s']:>18} {row['double_workers_ratio']:>6}"
              f"{'  errors: ' + str(row['errors']) if row['errors'] else ''}")


if __name__ == "__main__":
    main()
