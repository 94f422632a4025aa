"""The OpenAPI schema (issue 13, part 4): committed, valid, complete, and served.

``docs/openapi.yaml`` is the generated schema checked in; a change to an app's
``openapi_operations`` module (or to drf-spectacular) that is not regenerated fails here with the
command to run. Every JSON route of ``medplum_auth`` and ``fhir_api`` must be described (the HTML
pages of the sign-in flow are listed with the reason they are not), and every described operation
must reach a view that answers its method. The live server is fuzzed over the schema in
``tests/e2e/test_schemathesis.py``.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "openapi.yaml"
REGENERATE = "python3 dev.py openapi"

#: Routes that are browser pages (HTML forms and redirects), not JSON endpoints, and so not described.
HTML_PAGES = {
    "medplum_auth:authorize-resume": "the sign-in flow's return to /oauth2/authorize (a redirect)",
    "medplum_auth:signin": "sign-in page",
    "medplum_auth:profile": "profile chooser page",
    "medplum_auth:mfa": "second-factor page",
    "medplum_auth:mfa-webauthn": "security key step of the second-factor page",
    "medplum_auth:account-security": "the user's second factors page",
    "medplum_auth:account-signin": "the account page's sign-in",
    "medplum_auth:account-webauthn": "security key registration of the account page",
    "medplum_auth:consent": "consent page",
    "medplum_auth:patient": "SMART patient picker page",
    "medplum_auth:reset-password": "'Forgot password?' page",
    "medplum_auth:set-password-done": "password set page",
    "medplum_auth:set-password": "the emailed link's page",
    "medplum_auth:account": "the user's apps and sessions page",
    "fhir_api:not-found": "any other /fhir/R4 path: a 404 OperationOutcome",
}
SAMPLE = {"resource_type": "Observation", "resource_id": "abc-1", "version_id": "1", "client_id": "some-client"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``manage.py spectacular --validate --fail-on-warn``: the schema's text and what the command
    printed. ``--validate`` checks it against the OpenAPI 3 JSON schema; ``--fail-on-warn`` raises
    ``CommandError`` on any drf-spectacular warning or error."""
    target = tmp_path_factory.mktemp("openapi") / "openapi.yaml"
    out, err = io.StringIO(), io.StringIO()
    call_command("spectacular", "--file", str(target), "--validate", "--fail-on-warn", stdout=out, stderr=err)
    return target.read_text(), out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def schema(generated: tuple[str, str]) -> dict[str, Any]:
    return yaml.safe_load(generated[0])


def test_the_committed_schema_is_the_generated_one(generated: tuple[str, str]) -> None:
    assert COMMITTED.read_text() == generated[0], (
        f"docs/openapi.yaml is out of date: regenerate it with `{REGENERATE}` and commit it")


def test_the_schema_validates_without_warnings(generated: tuple[str, str], schema: dict[str, Any]) -> None:
    assert "Warning" not in generated[1] and "Error" not in generated[1], generated[1]
    assert schema["openapi"].startswith("3.")
    assert len(schema["paths"]) > 30


def _routes() -> dict[str, list[str]]:
    """``namespace:name`` → route segments of every medplum_auth and fhir_api URL."""
    routes: dict[str, list[str]] = {}

    def walk(resolver: URLResolver, prefix: list[str], namespace: str | None) -> None:
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                walk(entry, [*prefix, str(entry.pattern)], entry.namespace or namespace)
            elif isinstance(entry, URLPattern) and namespace in {"medplum_auth", "fhir_api"}:
                routes[f"{namespace}:{entry.name}"] = [*prefix, str(entry.pattern)]

    walk(get_resolver(), [], None)
    return routes


def _filled(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m.group(1)], path)


def test_every_json_route_is_described_and_every_operation_reaches_its_view(schema: dict[str, Any]) -> None:
    described: dict[str, set[str]] = {}
    for path, item in schema["paths"].items():
        match = resolve(_filled(path))
        assert match.view_name != "fhir_api:not-found", f"{path} reaches no view"
        described.setdefault(match.view_name, set()).update(item)
        view = getattr(match.func, "view_class", None) or getattr(match.func, "cls", None)
        if view is not None:  # a class-based view answers each described method (or dispatches itself)
            for method in item:
                assert hasattr(view, method) or "dispatch" in vars(view), (path, method, view)
    missing = set(_routes()) - set(described) - set(HTML_PAGES)
    assert not missing, f"JSON routes without an operation in an app's openapi_operations module: {missing}"
    assert not set(HTML_PAGES) & set(described), "a listed HTML page is described: drop it from HTML_PAGES"


@pytest.mark.parametrize("path, content_type", [("/api/schema/", "application/vnd.oai.openapi"),
                                                ("/api/schema/?format=json", "application/vnd.oai.openapi+json")])
def test_the_schema_is_public_and_matches_the_committed_file(client: Any, path: str, content_type: str) -> None:
    """Public (Medplum publishes its OpenAPI too): no session, and credentials are not even looked at."""
    response = client.get(path, HTTP_AUTHORIZATION="Basic bm90OnZhbGlk")
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith(content_type)
    assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff"
    assert "Set-Cookie" not in response
    served = json.loads(response.content) if "json" in content_type else yaml.safe_load(response.content)
    assert served == yaml.safe_load(COMMITTED.read_text())


@pytest.mark.parametrize("method", ["POST", "OPTIONS", "TRACE", "QUERY"])
@pytest.mark.parametrize("path", ["/api/schema/", "/api/schema/docs/"])
def test_the_schema_views_answer_get_only(client: Any, path: str, method: str) -> None:
    """OPTIONS on the docs page was a 500 (found by the random-seed fuzz): DRF rendered its metadata
    with the page's HTML renderer, which has no template for it."""
    response = client.generic(method, path)
    assert response.status_code == 405, (path, response.status_code, response.content[:200])
    assert response["Allow"] == "GET, HEAD"
    assert client.head(path).status_code == 200


def test_the_docs_page_uses_no_cdn(client: Any) -> None:
    """Swagger UI from drf-spectacular-sidecar's static files: it works on a network without internet."""
    response = client.get("/api/schema/docs/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    assert response["X-Frame-Options"] == "DENY"
    page = response.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    scripts = [s for s in sources if s.endswith(".js")]
    assert scripts and all(s.startswith("/static/drf_spectacular_sidecar/") for s in scripts), sources
    assert not [s for s in sources if s.startswith(("http:", "https:", "//"))], sources
    for source in scripts:
        assert finders.find(source.removeprefix("/static/")), f"{source} is not shipped"
    assert "/api/schema/" in page


@pytest.mark.spec("RFC 9110 §15.5.6")
@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server",
                                  "/.well-known/jwks.json", "/.well-known/smart-configuration",
                                  "/fhir/R4/.well-known/smart-configuration", "/.well-known/smart-styles.json"])
@pytest.mark.parametrize("method", ["POST", "PUT", "QUERY"])
def test_public_documents_answer_other_methods_405(db: Any, path: str, method: str) -> None:
    """Issue 13 (schemathesis): they answered Django's 403 CSRF failure page to any unsafe method."""
    response = Client(enforce_csrf_checks=True).generic(method, path)
    assert response.status_code == 405 and response["Allow"] == "GET", (response.status_code, response.content[:200])
