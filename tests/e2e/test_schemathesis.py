"""The live server fuzzed over its own OpenAPI schema with schemathesis (issue 13, part 4).

The schema is the one the server serves at ``/api/schema/`` (the committed ``docs/openapi.yaml``
is the same: ``tests/test_openapi.py``). For every operation schemathesis draws requests from the
schema (path and query parameters, headers, form and JSON bodies) and checks the answers: no 5xx,
a documented status code, a documented content type, a body that validates against the response
schema, and the documented headers. Operations secured by a Bearer token get a seeded
practitioner's token (a project admin: the FHIR API, the auth API and AuditEvents answer past
401); client-authenticated ones get a confidential client's Basic credentials; registration gets
an initial access token. Examples per operation are bounded (``MEDPLUM_SCHEMATHESIS_EXAMPLES``,
default 6) and the seed is fixed (``MEDPLUM_SCHEMATHESIS_SEED`` to try another), so a database run
stays within a few tens of seconds. Every failure is collected, so one run lists them all.

Run it alone: ``python3 dev.py test tests/e2e/test_schemathesis.py`` (add
``MEDPLUM_SCHEMATHESIS_EXAMPLES=50`` for a longer hunt).
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
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode

from tests.e2e.conftest import LiveServer, gunicorn

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

EXAMPLES = int(os.environ.get("MEDPLUM_SCHEMATHESIS_EXAMPLES", "6"))
SEED = int(os.environ.get("MEDPLUM_SCHEMATHESIS_SEED", "20261207"))
CHECKS = [schemathesis.checks.not_a_server_error, schemathesis.checks.status_code_conformance,
          schemathesis.checks.content_type_conformance, schemathesis.checks.response_schema_conformance,
          schemathesis.checks.response_headers_conformance]
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
    from django.conf import settings as django_settings
    from django.test import override_settings

    from fhir_api.repository import Repository
    from medplum_auth import services, tokens
    from tests.factories import MembershipFactory, ProjectFactory
    from tests.fhir.conftest import mint

    tokens.clear_cache()  # the previous test's flush deleted the key this process has cached
    services.ensure_signing_key()
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


def fuzz(operation: Any, base_url: str, session: requests.Session, headers: dict[str, str]) -> None:
    """``EXAMPLES`` requests drawn from the operation's schema, each answer checked (no shrinking: the
    first failure is reported as drawn, with the curl command to replay it)."""

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
           | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=base_url, session=session, headers=headers, checks=CHECKS, timeout=30)

    run()


def test_every_operation_conforms_to_the_schema(schema_server: LiveServer, credentials: dict[str, str]) -> None:
    response = requests.get(f"{schema_server.url}/api/schema/?format=json", timeout=30)
    assert response.status_code == 200, response.text[:500]
    schema = schemathesis.openapi.from_dict(response.json())
    failures: list[str] = []
    operations = 0
    session = requests.Session()
    sent: list[str] = []
    session.hooks["response"].append(lambda response, *args, **kwargs: sent.append(response.request.method))
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        try:
            fuzz(operation, schema_server.url, session, authorization(operation, credentials))
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a FailureGroup; collect them all
            failures.append(f"{operation.label}:\n{exc}")
    print(f"schemathesis: {len(sent)} requests over {operations} operations, seed {SEED}")
    assert operations > 40, operations  # the whole schema was walked (auth API, OAuth, discovery, FHIR)
    assert len(sent) >= operations * min(EXAMPLES, 3), len(sent)  # each operation was really called
    assert not failures, f"{len(failures)} of {operations} operations failed:\n\n" + "\n\n".join(failures) + \
        f"\n\nserver log:\n{schema_server.log_tail(40)}"
