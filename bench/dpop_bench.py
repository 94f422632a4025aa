"""What DPoP (RFC 9449) costs the server per request, against the same request with a Bearer token.

In process, through the Django test client (the whole request: middleware, authentication, the
login lookup, the view), in interleaved rounds so that the drift of a shared machine cancels out:

* ``fhir_read``: ``GET /fhir/R4/Patient/<id>`` with a Bearer token vs a DPoP-bound token and a
  fresh proof (ES256 or RS256);
* ``userinfo``: ``GET /oauth2/userinfo``, the same pair;
* ``client_credentials``: ``POST /oauth2/token`` (Basic) without vs with a proof;
* ``verify``: ``dpop.verify()`` alone (signature, claims, the replay ``cache.add``).

Proofs are made before each round (the client's work is not timed); figures are CPU time per
request in the server process and the ratio DPoP / Bearer. SQLite by default (a temporary test
database); ``DATABASE_URL=postgres://…`` measures on PostgreSQL::

    .venv/bin/python bench/dpop_bench.py [--alg ES256|RS256] [--requests 300] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alg", default="ES256", choices=["ES256", "RS256"])
    parser.add_argument("--requests", type=int, default=300, help="requests per scenario and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    os.environ.setdefault("SECRET_KEY", "bench-" + "x" * 50)
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import logging

    import django
    from django.conf import settings

    django.setup()
    logging.disable(logging.INFO)  # one audit line per token request would be timed too
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases

    setup_test_environment()
    settings.DEBUG = False
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = (
        f"{settings.DATABASES['default']['NAME']}_dpopbench" if "postgres" in settings.DATABASES["default"]["ENGINE"]
        else None)
    old = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    try:
        result = run(args)
    finally:
        teardown_databases(old, verbosity=0)
    if args.json:
        print(json.dumps(result))
        return
    print(f"DPoP {args.alg}, {result['database']}, {args.rounds} rounds x {args.requests} requests; "
          "CPU ms per request (median of rounds)")
    print(f"{'scenario':<20} {'Bearer':>8} {'DPoP':>8} {'ratio':>7}")
    for name, row in result["scenarios"].items():
        print(f"{name:<20} {row['bearer_ms']:>8.3f} {row['dpop_ms']:>8.3f} {row['ratio']:>7.2f}")
    print(f"{'verify alone':<20} {'':>8} {result['verify_ms']:>8.3f}")


def run(args: argparse.Namespace) -> dict:
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from medplum_auth import dpop, services, tokens
    from medplum_auth.models import Login
    from tests.fhir.conftest import seed
    from tests.oauth.dpop_client import TESTSERVER, DPoPKey

    services.ensure_signing_key()
    project = services.create_project("Bench")
    app, secret = services.create_client(project, "Bench app", redirect_uris=["https://app.example.org/cb"])
    patient = seed(project, {"resourceType": "Patient", "name": [{"family": "Bench"}]})
    key = DPoPKey(args.alg)
    login = Login.objects.create(client=app, project=project, auth_method=Login.Method.CLIENT,
                                 auth_time=timezone.now(),
                                 scope="system/*.read")

    def access(bound: bool) -> str:
        return tokens.issue_access_token(subject=app.client_id, client_id=app.client_id, login_id=str(login.pk),
                                         scope="system/*.read openid", profile=None, lifetime=3600,
                                         extra={"cnf": {"jkt": key.jkt}} if bound else None)

    bearer_token, bound_token = access(False), access(True)
    basic = "Basic " + base64.b64encode(f"{app.client_id}:{secret}".encode()).decode()
    read_path = f"/fhir/R4/Patient/{patient['id']}"
    http = Client()

    def timed(requests: list) -> float:
        start = time.process_time()
        for call in requests:
            response = call()
            if response.status_code != 200:
                raise SystemExit(f"unexpected {response.status_code}: {response.content[:300]!r}")
        return (time.process_time() - start) * 1000 / len(requests)

    def scenario(bearer_call, dpop_call, dpop_first: bool = False) -> tuple[float, float]:
        proofs = [dpop_call() for _ in range(args.requests)]  # make the proofs first: client work
        if dpop_first:
            d = timed(proofs)
            b = timed([bearer_call] * args.requests)
        else:
            b = timed([bearer_call] * args.requests)
            d = timed(proofs)
        return b, d

    def get(path: str, token: str, scheme: str = "Bearer", proof: str | None = None):
        extra = {"HTTP_AUTHORIZATION": f"{scheme} {token}"}
        if proof:
            extra["HTTP_DPOP"] = proof
        return lambda: http.get(path, **extra)

    def token_post(proof: str | None):
        extra = {"HTTP_AUTHORIZATION": basic}
        if proof:
            extra["HTTP_DPOP"] = proof
        return lambda: http.post("/oauth2/token", "grant_type=client_credentials",
                                 content_type="application/x-www-form-urlencoded", **extra)

    scenarios = {
        "fhir_read": (get(read_path, bearer_token),
                      lambda: get(read_path, bound_token, "DPoP",
                                  key.proof("GET", read_path, access_token=bound_token))),
        "userinfo": (get("/oauth2/userinfo", bearer_token),
                     lambda: get("/oauth2/userinfo", bound_token, "DPoP",
                                 key.proof("GET", "/oauth2/userinfo", access_token=bound_token))),
        "client_credentials": (token_post(None), lambda: token_post(key.proof("POST", "/oauth2/token"))),
    }
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in scenarios}
    verify_ms: list[float] = []
    for bearer_call, dpop_call in scenarios.values():
        scenario(bearer_call, dpop_call)  # warm-up round
    for round_number in range(args.rounds):
        for name, (bearer_call, dpop_call) in scenarios.items():
            figures[name].append(scenario(bearer_call, dpop_call, dpop_first=round_number % 2 == 1))
        proofs = [key.proof("POST", "/oauth2/token") for _ in range(args.requests)]
        start = time.process_time()
        for proof in proofs:
            dpop.verify(proof, method="POST", uris=(TESTSERVER + "/oauth2/token",))
        verify_ms.append((time.process_time() - start) * 1000 / len(proofs))
        cache.clear()
    result = {"alg": args.alg, "database": connection.vendor, "rounds": args.rounds, "requests": args.requests,
              "scenarios": {}, "verify_ms": round(statistics.median(verify_ms), 4)}
    for name, pairs in figures.items():
        b = statistics.median(p[0] for p in pairs)
        d = statistics.median(p[1] for p in pairs)
        result["scenarios"][name] = {"bearer_ms": round(b, 4), "dpop_ms": round(d, 4), "ratio": round(d / b, 3)}
    return result


if __name__ == "__main__":
    main()
