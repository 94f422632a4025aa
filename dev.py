#!/usr/bin/env python3
"""Developer entry point; needs only Python 3.11+.

    python3 dev.py demo    # venv + install + migrate SQLite + seed the demo + serve on 127.0.0.1:8000,
                           # and the demo client app (examples/demo_client) on 127.0.0.1:8888
    python3 dev.py cluster # two gunicorn instances on PostgreSQL (DATABASE_URL) + Redis behind a
                           # round-robin proxy on 127.0.0.1:8000, and the demo client
    python3 dev.py test    # venv + install + the whole test suite (extra args go to pytest)
    python3 dev.py openapi # regenerate docs/openapi.yaml (validated; drf-spectacular warnings fail)

The virtual environment lives in .venv and is reinstalled only when requirements.txt or
pyproject.toml change.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".medplum-install-stamp"
DEMO_PORT = os.environ.get("PORT", "8000")
DEMO_CLIENT_PORT = os.environ.get("DEMO_CLIENT_PORT", "8888")


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run([str(a) for a in args], cwd=ROOT, env=env)
    if result.returncode:
        sys.exit(result.returncode)


def ensure_venv() -> None:
    """Create .venv and install the pinned requirements plus this project (editable)."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs under any system python3
        sys.exit("Python 3.11 or newer is required.")
    if not PYTHON.exists():
        print("Creating .venv …", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256(
        b"".join((ROOT / name).read_bytes() for name in ("requirements.txt", "pyproject.toml"))
    ).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    print("Installing dependencies into .venv …", flush=True)
    run(PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", "requirements.txt")
    run(PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "-e", ".")
    STAMP.write_text(wanted)


def demo() -> None:
    """Provider on DEMO_PORT (runserver) and the demo client app (examples/demo_client) on 8888."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    env.setdefault("DEBUG", "1")
    env.setdefault("MEDPLUM_ISSUER", f"http://127.0.0.1:{DEMO_PORT}")
    run(PYTHON, "manage.py", "migrate", "--noinput", env=env)
    run(PYTHON, "manage.py", "medplum_seed_demo", env=env)
    client_env = {**os.environ, "DEMO_ISSUER": env["MEDPLUM_ISSUER"], "DEMO_CLIENT_PORT": DEMO_CLIENT_PORT,
                  "DEMO_CLIENT_ID": "medplum-demo-public"}
    client = subprocess.Popen([str(PYTHON), str(ROOT / "examples" / "demo_client" / "app.py")], cwd=ROOT,
                              env=client_env)
    issuer = env["MEDPLUM_ISSUER"]
    print(f"""
Provider (identity provider + FHIR API): {issuer}/   (Django admin: {issuer}/admin/)
Demo client app (a third-party app):      http://127.0.0.1:{DEMO_CLIENT_PORT}/

Open the demo client, press "Sign in" and sign in as patient@example.com / Demo-Patient-2026!
(or practitioner@example.com / Demo-Practitioner-2026! to see the patient list). For a SMART EHR
launch, sign in to {issuer}/project-admin/ as the practitioner, open the client
"Demo public client" and press "Launch app". Ctrl-C stops both.
""", flush=True)
    try:
        subprocess.run([str(PYTHON), "manage.py", "runserver", f"127.0.0.1:{DEMO_PORT}", "--noreload"], cwd=ROOT,
                       env=env)
    except KeyboardInterrupt:
        pass
    finally:
        client.terminate()
        client.wait(timeout=10)


def cluster() -> None:
    """Two gunicorn instances on PostgreSQL + Redis behind a round-robin proxy, and the demo client.

    DATABASE_URL must be PostgreSQL; REDIS_URL defaults to a redis-server (Debian's package)
    started here on port 6390. The proxy (examples/cluster/proxy.py) listens on PORT (8000),
    the instances on 8001 and 8002; MEDPLUM_ISSUER is the proxy's URL, as behind a load balancer.
    """
    import shutil
    import signal
    import time

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a SIGTERM stops the children too

    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        sys.exit("dev.py cluster needs DATABASE_URL=postgres://… (several instances share one PostgreSQL).")
    issuer = f"http://127.0.0.1:{DEMO_PORT}"
    processes: list[subprocess.Popen[bytes]] = []
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        if not shutil.which("redis-server"):
            sys.exit("redis-server not found: apt-get install redis-server (or set REDIS_URL).")
        processes.append(subprocess.Popen(["redis-server", "--port", "6390", "--bind", "127.0.0.1", "--save", "",
                                           "--appendonly", "no"], stdout=subprocess.DEVNULL))
        redis_url = "redis://127.0.0.1:6390/0"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "REDIS_URL": redis_url,
           "MEDPLUM_ISSUER": issuer, "DEBUG": "0", "ALLOWED_HOSTS": "127.0.0.1,localhost",
           "SECRET_KEY": os.environ.get("SECRET_KEY", "dev-cluster-secret-key-not-for-production")}
    run(PYTHON, "manage.py", "migrate", "--noinput", env=env)
    run(PYTHON, "manage.py", "medplum_seed_demo", env=env)
    run(PYTHON, "manage.py", "collectstatic", "--noinput", "-v", "0", env=env)
    upstreams = []
    for port in (int(DEMO_PORT) + 1, int(DEMO_PORT) + 2):
        upstreams.append(f"http://127.0.0.1:{port}")
        processes.append(subprocess.Popen(
            [str(PYTHON), "-m", "gunicorn", "config.wsgi", "--workers", "2", "--bind", f"127.0.0.1:{port}",
             "--no-control-socket", "--access-logfile", "-",
             "--access-logformat", f"instance {port}: %(m)s %(U)s %(s)s"],
            cwd=ROOT, env=env))
    processes.append(subprocess.Popen([str(PYTHON), str(ROOT / "examples" / "cluster" / "proxy.py"), DEMO_PORT,
                                       *upstreams], cwd=ROOT))
    processes.append(subprocess.Popen([str(PYTHON), str(ROOT / "examples" / "demo_client" / "app.py")], cwd=ROOT,
                                      env={**os.environ, "DEMO_ISSUER": issuer, "DEMO_CLIENT_PORT": DEMO_CLIENT_PORT}))
    time.sleep(2)
    print(f"""
Round-robin proxy (the issuer):  {issuer}/  → instances {", ".join(upstreams)}
PostgreSQL: {database_url.split("@")[-1]}   Redis: {redis_url}
Demo client app:                 http://127.0.0.1:{DEMO_CLIENT_PORT}/
Each instance logs its requests ("instance PORT: …"): sign in through the demo client and watch
them alternate. Ctrl-C stops everything.
""", flush=True)
    try:
        while all(proc.poll() is None for proc in processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in reversed(processes):
            proc.terminate()
        for proc in processes:
            proc.wait(timeout=15)


def openapi() -> None:
    """Write the OpenAPI schema to docs/openapi.yaml (tests/test_openapi.py fails when it is stale)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    run(PYTHON, "manage.py", "spectacular", "--file", "docs/openapi.yaml", "--validate", "--fail-on-warn", env=env)
    print("Wrote docs/openapi.yaml")


def test(extra: list[str]) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    run(PYTHON, "-m", "pytest", *extra, env=env)


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in {"demo", "cluster", "test", "install", "openapi"}:
        sys.exit(__doc__)
    ensure_venv()
    if argv[0] == "demo":
        demo()
    elif argv[0] == "cluster":
        cluster()
    elif argv[0] == "test":
        test(argv[1:])
    elif argv[0] == "openapi":
        openapi()


if __name__ == "__main__":
    main(sys.argv[1:])
