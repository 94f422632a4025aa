"""Issue 15 (5): a new site that adds exactly the README's "Install into your own Django site" lines
passes ``check --deploy`` without a warning from these apps or DOT and serves every route the
example site serves (compared through the URL resolver)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("DATABASE_URL", "").startswith("postgres"),
                                reason="the install lines do not depend on the database: the SQLite run has it")

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Install into your own Django site"
ROUTES = """
import json
from django.urls import URLPattern, URLResolver, get_resolver

def walk(patterns, namespace):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from walk(entry.url_patterns, entry.namespace or namespace)
        elif isinstance(entry, URLPattern) and namespace in {"medplum_auth", "fhir_api", "project_admin"}:
            yield f"{namespace}:{entry.name}"

print(json.dumps(sorted(set(walk(get_resolver().url_patterns, "")))))
"""


def readme_blocks() -> tuple[str, str]:
    """The section's two Python blocks: settings.py's lines and urls.py's."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", len(SECTION))]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2, blocks
    return blocks[0], blocks[1]


def manage(site: Path, *args: str, settings: str = "site_under_test.settings") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings, "MEDPLUM_CLIENT_SECRET_DIGEST_KEY": "k" * 64,
           "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    env.pop("DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "django", *args], cwd=site, env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_fresh_site_with_the_readme_lines_is_secure_and_complete(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    made = subprocess.run([sys.executable, "-m", "django", "startproject", "site_under_test", str(site)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    settings_lines, url_lines = readme_blocks()
    package = site / "site_under_test"
    with open(package / "settings.py", "a") as settings_file:
        settings_file.write("\n" + settings_lines)
    with open(package / "urls.py", "a") as urls_file:
        urls_file.write("\n" + url_lines)

    checked = manage(site, "check", "--deploy")
    output = checked.stdout + checked.stderr
    ours = re.findall(r"\((medplum_auth|oauth2_provider|corsheaders|rest_framework)\.([EW]\d+)\)", output)
    assert not ours, output
    assert checked.returncode == 0, output  # Django's own deploy warnings (DEBUG, SECRET_KEY) only

    fresh = manage(site, "shell", "-c", ROUTES)
    assert fresh.returncode == 0, fresh.stderr
    example = manage(site, "shell", "-c", ROUTES, settings="tests.settings")
    assert example.returncode == 0, example.stderr
    routes = json.loads(fresh.stdout.strip().splitlines()[-1])
    assert routes == json.loads(example.stdout.strip().splitlines()[-1])
    assert len(routes) > 60 and "fhir_api:smart-configuration" in routes and "project_admin:index" in routes
