"""Client secret verification: our keyed HMAC-SHA256 digest vs Django's default password hasher.

django-oauth-toolkit stores client secrets with ``make_password`` (PBKDF2-SHA256, 1,000,000
iterations on Django 5.2) and checks every confidential token request with ``check_password``.
Our secrets are 256 random bits, so a keyed digest is enough. This prints both costs from the
same run and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("SECRET_KEY", "bench-secret-key-" + "x" * 40)

import django  # noqa: E402

django.setup()

from django.contrib.auth.hashers import check_password, get_hasher, make_password  # noqa: E402

from medplum_auth.secrets import digest_client_secret, generate_client_secret, verify_client_secret  # noqa: E402


def per_call(func: Any, repeat: int, number: int) -> tuple[float, float]:
    """Median and best seconds per call over ``repeat`` batches of ``number`` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            func()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples), min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    secret = generate_client_secret()
    digest = digest_client_secret(secret)
    hashed = make_password(secret)  # Django's default hasher, as DOT stores client secrets
    assert verify_client_secret(secret, digest) and check_password(secret, hashed)

    ours_median, ours_best = per_call(lambda: verify_client_secret(secret, digest), repeat=7, number=20000)
    django_median, django_best = per_call(lambda: check_password(secret, hashed), repeat=5, number=3)
    result = {
        "django_hasher": get_hasher().algorithm,
        "django_hasher_iterations": getattr(get_hasher(), "iterations", None),
        "keyed_digest_us_per_verify": round(ours_median * 1e6, 2),
        "django_hasher_ms_per_verify": round(django_median * 1e3, 1),
        "speedup": round(django_median / ours_median),
        "keyed_digest_cost_ratio": django_median and ours_median / django_median,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"keyed HMAC-SHA256 digest verify : {result['keyed_digest_us_per_verify']:>10.2f} µs")
    print(f"Django {result['django_hasher']} ({result['django_hasher_iterations']} it.) : "
          f"{result['django_hasher_ms_per_verify']:>10.1f} ms")
    print(f"ratio (digest / default hasher) : {result['keyed_digest_cost_ratio']:.2e}  "
          f"(the digest is {result['speedup']:,}x cheaper)")


if __name__ == "__main__":
    main()
