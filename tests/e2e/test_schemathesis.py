"""The live server fuzzed over its OpenAPI schema with schemathesis (issue 13, part 4).

One test per operation of ``docs/openapi.yaml`` (the schema the server serves at ``/api/schema/``:
checked below and in ``tests/test_openapi.py``). Schemathesis sends the schema's examples and its
coverage phase (each parameter and body field at its boundaries, missing, of the wrong type, and
the methods the schema does not declare), positive and negative, and checks every answer: no 5xx,
a documented status code and content type, a body valid against the response schema, the required
response headers, a 4xx for a request the schema forbids, 405 with a matching ``Allow`` for an
undeclared method. Operations secured by a Bearer token get a seeded practitioner's token (a
project admin: the FHIR API, the auth API and AuditEvents answer past 401); client-authenticated
ones a confidential client's Basic credentials; registration an initial access token. The seed is
fixed (``MEDPLUM_SCHEMATHESIS_SEED``); ``MEDPLUM_SCHEMATHESIS_EXAMPLES=N`` adds a fuzzing phase of N
random requests per operation (off in CI: about 5 s per example over the whole schema).

Run it alone: ``python3 dev.py test tests/e2e/test_schemathesis.py`` (a longer hunt:
``MEDPLUM_SCHEMATHESIS_EXAMPLES=50 MEDPLUM_SCHEMATHESIS_SEED=$RANDOM python3 dev.py test
tests/e2e/test_schemathesis.py``).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from django.conf import settings as django_settings
from hypothesis import Phase, settings

from tests.e2e.conftest import ROOT, LiveServer, gunicorn

# Transactional like the other e2e tests (the server must see the seeded rows), serialized rollback
# so the flush leaves the next e2e tests' content types in place on SQLite.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


#: Which requests the coverage phase makes: ``all`` (valid ones, whose success answers are checked, and
#: schema-violating ones) in the PostgreSQL run, the production database; ``negative`` in the SQLite run,
#: to keep both runs within CI's time (the answers to valid requests differ between the two databases
#: only in the SQL below them). ``MEDPLUM_SCHEMATHESIS_MODE`` chooses (positive, negative or all).
MODE = os.environ.get("MEDPLUM_SCHEMATHESIS_MODE") or (
    "all" if django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql") else "negative")
#: Fuzzed requests per operation on top of the coverage phase; 0 (CI's default) runs no fuzzing phase: its
#: generation costs about 5 s per example per 54 operations, the coverage phase finds the boundary cases.
EXAMPLES = int(os.environ.get("MEDPLUM_SCHEMATHESIS_EXAMPLES", "0"))
SEED = int(os.environ.get("MEDPLUM_SCHEMATHESIS_SEED", "20261207"))
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance, schemathesis.checks.response_schema_conformance,
          schemathesis.checks.response_headers_conformance, schemathesis.checks.ignored_auth,
          schemathesis.checks.negative_data_rejection, schemathesis.checks.unsupported_method,
          schemathesis.checks.allow_header_conformance]
#: Operations that would end the practitioner's login for every later request: sent without it.
WITHOUT_TOKEN = {"/oauth2/logout"}
#: The failure throttles lifted, so wrong guesses reach the protocol code instead of a 429 after ten
#: (the throttles have their own tests: tests/oauth/test_throttle*.py, tests/e2e/test_two_instances.py).
UNTHROTTLED = {name: 10**6 for name in ("SIGNIN_MAX_FAILURES", "TOKEN_CLIENT_MAX_FAILURES", "TOKEN_IP_MAX_FAILURES",
                                        "MFA_MAX_FAILURES")}


@pytest.fixture(scope="module")
def schema_server(django_db_setup: Any, django_db_blocker: Any,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with gunicorn(tmp_path_factory.mktemp("schemathesis") / "gunicorn.log",
                  env={"MEDPLUM_E2E_AUTH": json.dumps(UNTHROTTLED)}) as server:
        yield server


@pytest.fixture
def credentials(transactional_db: Any, schema_server: LiveServer) -> dict[str, str]:
    """A project with a practitioner admin (and their token), a confidential client, a Patient with
    an Observation, and an initial access token for registration."""
    from django.test import override_settings

    from fhir_api.repository import Repository
    from medplum_auth import services, tokens
    from tests.factories import MembershipFactory, ProjectFactory
    from tests.fhir.conftest import mint

    tokens.clear_cache()  # the previous test's flush deleted the key this process has cached
    services.rotate_signing_keys("ES256")  # each operation's test seeds again: an EC key is made in no time
    project = ProjectFactory(name="Schemathesis Clinic")
    client, secret = services.create_client(project, "Schemathesis app", redirect_uris=["https://app.example.org/cb"])
    practitioner = MembershipFactory(project=project, profile_type="Practitioner", admin=True)
    repository = Repository(project.pk, None)
    patient = repository.create("Patient", {"resourceType": "Patient", "name": [{"family": "Lee"}]})
    repository.create("Observation", {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                      "subject": {"reference": f"Patient/{patient.resource_id}"}})
    _, initial_token = services.create_registration_token(project, label="schemathesis")
    with override_settings(MEDPLUM_AUTH={**django_settings.MEDPLUM_AUTH, "ISSUER": schema_server.url}):
        token = mint(client=client, membership=practitioner, scope="openid profile email fhirUser user/*.*")
    return {"bearerAuth": f"Bearer {token}", "initialAccessToken": f"Bearer {initial_token}",
            "registrationAccessToken": f"Bearer {initial_token}",
            "clientSecretBasic": "Basic " + base64.b64encode(f"{client.client_id}:{secret}".encode()).decode()}


def authorization(operation: Any, credentials: dict[str, str]) -> dict[str, str]:
    """The credential of the operation's first security scheme that we hold (none for public ones)."""
    if operation.path in WITHOUT_TOKEN:
        return {}
    for requirement in operation.definition.raw.get("security", []):
        for scheme in requirement:
            if scheme in credentials:
                return {"Authorization": credentials[scheme]}
    return {}


#: The committed schema (``tests/test_openapi.py`` proves it is the one the server serves), loaded at
#: collection so that each operation is a test of its own.
SCHEMA = schemathesis.openapi.from_path(str(ROOT / "docs" / "openapi.yaml"), config=schemathesis.Config.from_dict({
    "seed": SEED, "suppress-health-check": ["all"],
    # A request the schema forbids must be refused with a 4xx; FHIR's precondition and conflict
    # answers (409, 412) and 405/413/415 are refusals too (schemathesis' default list lacks them).
    "checks": {"negative_data_rejection": {"expected-statuses": [
        "400", "401", "403", "404", "405", "406", "409", "410", "412", "413", "415", "422", "428", "429"]}},
    "generation": {"mode": MODE, "max-examples": max(EXAMPLES, 1)},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": EXAMPLES > 0},
               "stateful": {"enabled": False}}}))


@SCHEMA.parametrize()
@settings(deadline=None, database=None, phases=[Phase.explicit, Phase.generate])
def test_operation_conforms_to_the_schema(case: Any, schema_server: LiveServer, credentials: dict[str, str]) -> None:
    """Per operation: the coverage phase (boundary and missing values), the schema's examples and
    ``EXAMPLES`` fuzzed requests, positive and negative; no shrinking, so a failure is reported as
    drawn, with the curl command to replay it."""
    case.call_and_validate(base_url=schema_server.url, headers=authorization(case.operation, credentials),
                           checks=CHECKS, timeout=30)


def test_the_served_schema_is_the_fuzzed_one(schema_server: LiveServer) -> None:
    served = requests.get(f"{schema_server.url}/api/schema/?format=json", timeout=30).json()
    assert served == SCHEMA.raw_schema
    assert sum(1 for _ in SCHEMA.get_all_operations()) > 40  # auth API, OAuth, discovery, FHIR


def test_the_docs_page_renders_every_operation_offline(schema_server: LiveServer) -> None:
    """Swagger UI in Debian's Chromium with every request off this server refused (a hospital network
    without internet): it loads its scripts from here and lists the schema's operations."""
    from django.db import connection

    from tests.e2e.conftest import CHROMIUM, unavailable

    if connection.vendor != "sqlite":
        pytest.skip("the docs page reads no database: it is tested in the SQLite run only (CI time)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install -r requirements.txt)")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    served = requests.get(f"{schema_server.url}/api/schema/?format=json", timeout=30).json()
    expected = sum(1 for item in served["paths"].values() for _ in item)
    elsewhere: list[str] = []

    def only_this_server(route: Any) -> None:
        if route.request.url.startswith(schema_server.url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.route("**/*", only_this_server)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{schema_server.url}/api/schema/docs/")
            page.wait_for_selector(".opblock", timeout=20_000)
            shown = page.locator(".opblock").count()
            title = page.locator(".info .title").inner_text()
        finally:
            browser.close()
    assert not elsewhere, elsewhere
    assert not errors, errors
    assert shown == expected, (shown, expected)
    assert "django-medplum-auth" in title
