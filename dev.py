#!/usr/bin/env python3
"""Developer entry point; needs only Python 3.11+.

    python3 dev.py demo    # venv + install + migrate SQLite + seed the demo + serve on 127.0.0.1:8000
    python3 dev.py test    # venv + install + the whole test suite (extra args go to pytest)

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
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    env.setdefault("DEBUG", "1")
    env.setdefault("MEDPLUM_ISSUER", f"http://127.0.0.1:{DEMO_PORT}")
    run(PYTHON, "manage.py", "migrate", "--noinput", env=env)
    run(PYTHON, "manage.py", "medplum_seed_demo", env=env)
    print_authorize_url(env["MEDPLUM_ISSUER"])
    print(f"\nServing on http://127.0.0.1:{DEMO_PORT}/ (Django admin: /admin/). Ctrl-C stops.\n", flush=True)
    os.execve(str(PYTHON), [str(PYTHON), "manage.py", "runserver", f"127.0.0.1:{DEMO_PORT}", "--noreload"], env)


def print_authorize_url(issuer: str) -> None:
    """A ready authorization request for the demo's public client, with a fresh PKCE pair."""
    import base64
    import secrets
    from urllib.parse import urlencode

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = "http://127.0.0.1:8888/callback"
    query = urlencode({
        "response_type": "code", "client_id": "medplum-demo-public", "redirect_uri": redirect_uri,
        "scope": "openid profile email offline_access", "state": secrets.token_urlsafe(8),
        "code_challenge": challenge, "code_challenge_method": "S256",
    })
    print(f"""
Open this authorization request in a browser and sign in as patient@example.com:
  {issuer}/oauth2/authorize?{query}
The browser then lands on {redirect_uri}?code=…&state=…&iss=… (nothing listens there; copy the code).
Trade the code within 60 seconds:
  curl -s {issuer}/oauth2/token -d grant_type=authorization_code -d client_id=medplum-demo-public \\
       -d redirect_uri={redirect_uri} -d code_verifier={verifier} -d code=PASTE_CODE
Then search the patient's record with the access_token (3 Observations, 2 Conditions are seeded):
  curl -s -H "Authorization: Bearer PASTE_ACCESS_TOKEN" {issuer}/fhir/R4/Observation
Revoke the app again on {issuer}/oauth2/account (Apps with access).""", flush=True)


def test(extra: list[str]) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    run(PYTHON, "-m", "pytest", *extra, env=env)


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in {"demo", "test", "install"}:
        sys.exit(__doc__)
    ensure_venv()
    if argv[0] == "demo":
        demo()
    elif argv[0] == "test":
        test(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
