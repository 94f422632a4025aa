"""Every route of the site, fuzzed over real HTTP: no request may answer 5xx (issue 15).

Routes come from the URL resolver (``config.urls``: medplum_auth, fhir_api, project_admin and the
Django admin), so a new route is fuzzed without touching this file. Hypothesis draws a path that
matches the route's pattern, a method, a query, headers (content types, no / valid / garbage
credentials) and a body (forms with OAuth parameter names, JSON documents, deep nesting, bytes).
Two runs: a fixed seed, and a random one that is printed (replay it with ``MEDPLUM_FUZZ_SEED``).
Each is bounded by wall time (``MEDPLUM_FUZZ_SECONDS``, default 15 s each, so 30 s per database
run of CI). The server is the e2e
gunicorn on the test database, with a project, clients, a Patient and tokens seeded.

Below it, the HTTP regression tests of the defects issue 15 found.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.e2e.conftest import LiveServer, gunicorn

# Serialized rollback, like the other e2e tests: without it the flush leaves the next e2e tests'
# content types colliding on SQLite.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

FIXED_SEED = 20261206
RANDOM_SEED = int(os.environ.get("MEDPLUM_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
BUDGET_SECONDS = float(os.environ.get("MEDPLUM_FUZZ_SECONDS", "15"))
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
CONTENT_TYPES = [None, "application/x-www-form-urlencoded", "application/json", "application/fhir+json",
                 "application/json-patch+json", "text/plain", "multipart/form-data; boundary=xyz",
                 "application/json; charset=latin-1"]
PARAM_NAMES = ["grant_type", "code", "client_id", "client_secret", "redirect_uri", "code_verifier", "refresh_token",
               "scope", "state", "nonce", "response_type", "code_challenge", "code_challenge_method", "token",
               "token_type_hint", "client_assertion", "client_assertion_type", "prompt", "max_age", "id_token_hint",
               "launch", "aud", "rid", "email", "password", "_count", "_offset", "_page", "_sort", "_include",
               "_revinclude", "_id", "subject", "patient", "date", "_summary", "next", "post_logout_redirect_uri"]
GRANT_TYPES = ["authorization_code", "refresh_token", "client_credentials", "password", "implicit", ""]


def _strip_anchors(regex: str) -> str:
    return re.sub(r"(\\Z|\$)$", "", regex.removeprefix("^"))


def site_routes() -> list[str]:
    """Every route of the site's URLconf as one anchored regex (include prefixes joined)."""
    from django.urls import URLPattern, URLResolver, get_resolver

    routes: list[str] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for entry in patterns:
            regex = prefix + _strip_anchors(entry.pattern.regex.pattern)
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, regex)
            elif isinstance(entry, URLPattern):
                routes.append(regex)

    walk(get_resolver().url_patterns, "")
    return sorted(set(routes))


JSON_KEYS = st.sampled_from(["resourceType", "id", "op", "path", "value", "email", "password", "clientId", "resource",
                             "meta", "name", "subject", "token", "login"]) | st.text(max_size=8)


def _nest(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(JSON_KEYS, inner, max_size=4)


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    return st.recursive(scalars, _nest, max_leaves=12)


@st.composite
def bodies(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["empty", "form", "json", "resource", "deep", "bytes"]))
    if kind == "empty":
        return b""
    if kind == "form":
        params = draw(st.dictionaries(st.sampled_from(PARAM_NAMES) | st.text(max_size=8),
                                      st.sampled_from(GRANT_TYPES) | st.text(max_size=30), max_size=6))
        return urlencode(params).encode()
    if kind == "json":
        return json.dumps(draw(json_values())).encode()
    if kind == "resource":
        resource = {"resourceType": draw(st.sampled_from(["Patient", "Observation", "Bundle", "Nope", ""])),
                    **draw(st.dictionaries(st.text(max_size=10), json_values(), max_size=4))}
        return json.dumps(resource).encode()
    if kind == "deep":
        depth = draw(st.integers(min_value=60, max_value=6000))
        return (b"[" * depth + b"]" * depth) if draw(st.booleans()) else (b'{"a":' * depth + b"1" + b"}" * depth)
    return draw(st.binary(max_size=200))


class Fuzzer:
    def __init__(self, server: LiveServer, credentials: dict[str, str]):
        self.server = server
        self.credentials = credentials
        self.sent = 0

    def send(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        parts = urlsplit(self.server.url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            self.sent += 1
            return response.status, response.read()
        finally:
            connection.close()


@st.composite
def requests_(draw: Any, routes: list[str], credentials: dict[str, str]) -> tuple[str, str, dict[str, str], bytes]:
    route = draw(st.sampled_from(routes))
    raw = draw(st.from_regex(f"^{route}\\Z", fullmatch=True))
    path = "/" + quote(raw, safe="/:@!$&'()*+,;=-._~")
    query = draw(st.dictionaries(st.sampled_from(PARAM_NAMES) | st.text(max_size=6), st.text(max_size=20),
                                 max_size=4))
    if query:
        path += "?" + urlencode(query)
    headers: dict[str, str] = {}
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type:
        headers["Content-Type"] = content_type
    auth = draw(st.sampled_from(["none", "bearer", "bearer-client", "garbage", "basic", "basic-garbage"]))
    if auth == "bearer":
        headers["Authorization"] = f"Bearer {credentials['patient_token']}"
    elif auth == "bearer-client":
        headers["Authorization"] = f"Bearer {credentials['client_token']}"
    elif auth == "garbage":
        headers["Authorization"] = "Bearer " + draw(st.sampled_from([
            "x", "a.b.c", base64.urlsafe_b64encode(b"[" * 3000).decode() + ".e30.sig"]) | st.text(
            alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60))
    elif auth == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"{credentials['client_id']}:{draw(st.sampled_from([credentials['client_secret'], 'wrong']))}".encode()
        ).decode()
    elif auth == "basic-garbage":
        headers["Authorization"] = "Basic " + draw(st.sampled_from(["!!!", "Og==", base64.b64encode(b"\xff:\xfe")
                                                                      .decode()]))
    if draw(st.booleans()):
        headers["Origin"] = draw(st.sampled_from(["https://app.example.org", "null", "http://evil.example"]))
    body = draw(bodies()) if draw(st.integers(0, 3)) else b""
    return draw(st.sampled_from(METHODS)), path, headers, body


@pytest.fixture(scope="module")
def fuzz_server(django_db_setup: Any, django_db_blocker: Any,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with gunicorn(tmp_path_factory.mktemp("fuzz") / "gunicorn.log") as server:
        yield server


@pytest.fixture
def credentials(transactional_db: Any, fuzz_server: LiveServer) -> dict[str, str]:
    """A project with a confidential client, a Patient with a resource, and a token of each."""
    from django.conf import settings as django_settings
    from django.test import override_settings

    from fhir_api.repository import Repository
    from medplum_auth import services, tokens
    from tests.factories import DEFAULT_PASSWORD, ClientApplicationFactory, MembershipFactory, ProjectFactory
    from tests.fhir.conftest import mint

    tokens.clear_cache()  # the previous test's flush deleted the key this process has cached
    services.ensure_signing_key()
    project = ProjectFactory(name="Fuzz Clinic")
    client, secret = services.create_client(project, "Fuzz app", redirect_uris=["https://app.example.org/cb"])
    public = ClientApplicationFactory(project=project, public=True, redirect_uris="https://app.example.org/cb")
    patient = MembershipFactory(project=project, profile_type="Patient")
    Repository(project.pk, None).create("Observation", {"resourceType": "Observation", "status": "final",
                                                         "code": {"text": "x"}})
    with override_settings(MEDPLUM_AUTH={**django_settings.MEDPLUM_AUTH, "ISSUER": fuzz_server.url}):
        patient_token = mint(client=public, membership=patient, scope="openid patient/*.read")
        client_token = mint(client=client, scope="system/*.*")  # the server's issuer, not the tests'
    return {"client_id": client.client_id, "client_secret": secret, "public_id": public.client_id,
            "patient_email": patient.user.email, "password": DEFAULT_PASSWORD,
            "patient_token": patient_token, "client_token": client_token}


def fuzz(server: LiveServer, credentials: dict[str, str], which_seed: int) -> None:
    """Batches of :data:`BATCH` examples, seeds ``which_seed``, ``which_seed + 1``, … until the budget is spent."""
    routes = site_routes()
    assert len(routes) > 60, routes  # the resolver really was walked (every app's routes)
    fuzzer = Fuzzer(server, credentials)
    strategy = requests_(routes, credentials)

    def case(request: tuple[str, str, dict[str, str], bytes]) -> None:
        method, path, headers, body = request
        status, content = fuzzer.send(method, path, headers, body)
        assert status < 500, f"{status} {method} {path} {headers} body={body[:200]!r}: {content[:300]!r}"

    deadline = time.monotonic() + BUDGET_SECONDS
    batch = 0
    try:
        while time.monotonic() < deadline:
            run = seed(which_seed + batch)(settings(max_examples=BATCH, deadline=None, database=None,
                                                    suppress_health_check=list(HealthCheck))(given(strategy)(case)))
            run()
            batch += 1
    finally:
        print(f"fuzz seeds {which_seed}..{which_seed + batch}: {fuzzer.sent} requests over {len(routes)} routes")
    assert fuzzer.sent > 50, fuzzer.sent


BATCH = 40


def test_fuzz_every_route_fixed_seed(fuzz_server: LiveServer, credentials: dict[str, str]) -> None:
    fuzz(fuzz_server, credentials, FIXED_SEED)


def test_fuzz_every_route_random_seed(fuzz_server: LiveServer, credentials: dict[str, str]) -> None:
    print(f"random fuzz seed: {RANDOM_SEED} (replay: MEDPLUM_FUZZ_SEED={RANDOM_SEED})")
    fuzz(fuzz_server, credentials, RANDOM_SEED)


# --- the defects of issue 15, over HTTP -------------------------------------------------------------

def post(server: LiveServer, path: str, body: bytes, content_type: str, **headers: str) -> tuple[int, dict, Any]:
    parts = urlsplit(server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("POST" if body is not None else "GET", path, body=body,
                           headers={"Content-Type": content_type, **headers})
        response = connection.getresponse()
        content = response.read()
        assert response.getheader("Content-Type", "").startswith(("application/json", "application/fhir+json")), \
            (response.status, content[:500])
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(content or b"null")
    finally:
        connection.close()


@pytest.mark.spec("RFC 6749 §5.2")
@pytest.mark.parametrize("grant_type", ["password", "implicit", "urn:ietf:params:oauth:grant-type:device_code"])
def test_unknown_grant_type_with_a_code_is_unsupported(fuzz_server: LiveServer, credentials: dict[str, str],
                                                        grant_type: str) -> None:
    """Issue 15 (1): oauthlib routed it to the code grant, whose locked lookup failed outside a transaction."""
    body = urlencode({"grant_type": grant_type, "code": "x", "client_id": credentials["public_id"]}).encode()
    status, headers, data = post(fuzz_server, "/oauth2/token", body, "application/x-www-form-urlencoded")
    assert status == 400 and data["error"] == "unsupported_grant_type" and data["error_description"], data
    assert headers["cache-control"] == "no-store"


DEEP = [b"[" * 5000 + b"]" * 5000, b'{"a":' * 3000 + b"1" + b"}" * 3000, b"[" * 65 + b"]" * 65]


@pytest.mark.parametrize("body", DEEP, ids=["array-5000", "object-3000", "array-65"])
@pytest.mark.parametrize("path", ["/auth/login", "/auth/profile"])
def test_deeply_nested_json_is_a_400_outcome(fuzz_server: LiveServer, credentials: dict[str, str], path: str,
                                            body: bytes) -> None:
    """Issue 15 (2): RecursionError escaped the JSON body parser (500)."""
    status, _, data = post(fuzz_server, path, body, "application/json")
    assert status == 400, data
    assert data["resourceType"] == "OperationOutcome" and data["issue"][0]["severity"] == "error", data
    assert data["issue"][0]["details"]["text"].startswith("Request body must be a JSON object"), data


@pytest.mark.parametrize("body", DEEP, ids=["array-5000", "object-3000", "array-65"])
@pytest.mark.parametrize("method, path, content_type", [
    ("POST", "/fhir/R4/Observation", "application/fhir+json"),
    ("POST", "/fhir/R4/Observation", "application/json"),
    ("PUT", "/fhir/R4/Observation/abc", "application/fhir+json"),
    ("PATCH", "/fhir/R4/Observation/abc", "application/json-patch+json"),
])
def test_deeply_nested_fhir_bodies_are_a_400_outcome(fuzz_server: LiveServer, credentials: dict[str, str],
                                                     method: str, path: str, content_type: str, body: bytes) -> None:
    parts = urlsplit(fuzz_server.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request(method, path, body=body, headers={"Content-Type": content_type,
                                                         "Authorization": f"Bearer {credentials['client_token']}"})
    response = connection.getresponse()
    data = json.loads(response.read())
    connection.close()
    assert response.status == 400, data
    assert data["resourceType"] == "OperationOutcome" and "nested deeper than 64" in data["issue"][0]["details"]["text"]


@pytest.mark.spec("RFC 9110 §15.5.6")
@pytest.mark.parametrize("path, allow", [("/oauth2/token", "POST, OPTIONS"), ("/oauth2/introspect", "POST, OPTIONS"),
                                         ("/oauth2/revoke", "POST, OPTIONS")])
def test_get_of_a_post_only_oauth_endpoint_is_405_json(transactional_db: Any, fuzz_server: LiveServer, path: str,
                                                       allow: str) -> None:
    """Issue 15 (7): it was a 405 with an empty body."""
    status, headers, data = post(fuzz_server, path, None, "text/plain")
    assert status == 405 and headers["allow"] == allow, (status, headers)
    assert data["error"] == "invalid_request" and "POST" in data["error_description"], data


@pytest.mark.spec("RFC 7636 §4.6")
def test_a_wrong_code_verifier_burns_the_code(fuzz_server: LiveServer, credentials: dict[str, str],
                                              client: Any) -> None:
    """Issue 15 (6): after one wrong verifier, not even the right one redeems the code."""
    from medplum_auth.models import ClientApplication
    from tests.oauth.conftest import REDIRECT_URI, Flow

    app = ClientApplication.objects.get(client_id=credentials["public_id"])
    app.redirect_uris = REDIRECT_URI
    app.save()
    flow = Flow(client, app)
    code = flow.follow(flow.sign_in(flow.authorize(), email=credentials["patient_email"]))["Location"]
    code = dict(pair.split("=", 1) for pair in urlsplit(code).query.split("&"))["code"]

    def redeem(verifier: str) -> tuple[int, dict, Any]:
        body = urlencode({"grant_type": "authorization_code", "code": code, "client_id": app.client_id,
                          "redirect_uri": REDIRECT_URI, "code_verifier": verifier}).encode()
        return post(fuzz_server, "/oauth2/token", body, "application/x-www-form-urlencoded")

    status, _, data = redeem("w" * 64)
    assert status == 400 and data["error"] == "invalid_grant" and data["error_description"] == "Invalid code_verifier"
    status, _, data = redeem(flow.verifier)
    assert status == 400 and data["error"] == "invalid_grant" and "access_token" not in data, data
