"""Concurrent writers on one live deployment (gunicorn, two worker processes, the session's database).

8 threads × 25 PUTs of one Patient and, at the same time, 8 threads × 25 token requests (each
thread alternates client_credentials with rotating its own refresh-token family). On SQLite this
proves ``medplum_auth.database.SQLITE_OPTIONS``: without them 35 of 200 PUTs answered 500
"database is locked" (issue 19). Every answer must be a 200 (no 5xx, no 503 either: the busy
timeout is far above the time a write holds the lock), every answered version must be distinct
and in the history, and every token issued must work afterwards. The same test runs on PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.utils import timezone

from medplum_auth import logins, services
from tests.e2e.conftest import gunicorn
from tests.fhir.conftest import seed
from tests.oauth.conftest import pkce_pair

pytestmark = [pytest.mark.django_db(transaction=True, serialized_rollback=True),
              pytest.mark.spec("issue 19: concurrent writes on the embedded default")]

THREADS = 8
ROUNDS = 25
USER_SCOPE = "openid offline_access user/*.cruds"
SYSTEM_SCOPE = "system/*.rs"


def call(method: str, url: str, *, form: dict[str, str] | None = None, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | None]:
    data = None
    headers = dict(headers or {})
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/fhir+json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def together(work: Any) -> list[list[Any]]:
    """Run ``work(index)`` in THREADS threads released at once; each returns its list of results."""
    barrier = threading.Barrier(THREADS)

    def run(index: int) -> list[Any]:
        barrier.wait(timeout=30)
        return work(index)

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(run, range(THREADS)))


@pytest.fixture
def deployment(transactional_db: Any, tmp_path: Any) -> Any:
    services.ensure_signing_key()
    project = services.create_project("Concurrency Clinic")
    app, secret = services.create_client(project, "Concurrency app", redirect_uris=["http://127.0.0.1:8976/cb"])
    doctor = services.invite_member(project, "doc@example.org", profile_type="Practitioner", first_name="Dee",
                                    last_name="Doc", password="Concurrency-Password-2026!").membership
    patient_id = seed(project, {"resourceType": "Patient", "name": [{"family": "Shared"}]})["id"]
    families = []
    for _ in range(THREADS):
        verifier, challenge = pkce_pair()
        _login, code = logins.create_login(user=doctor.user, client=app, membership=doctor, scope=USER_SCOPE,
                                           auth_time=timezone.now(), code_challenge=challenge,
                                           code_challenge_method="S256")
        families.append((code, verifier))
    basic = "Basic " + base64.b64encode(f"{app.client_id}:{secret}".encode()).decode()
    with gunicorn(tmp_path / "gunicorn.log", workers=2) as server:
        yield server, basic, patient_id, families


def test_concurrent_updates_and_token_requests(deployment: Any) -> None:
    server, basic, patient_id, families = deployment
    token_url, auth = f"{server.url}/oauth2/token", {"Authorization": basic}
    refresh_tokens, first_access = [], []
    for code, verifier in families:
        status, body = call("POST", token_url, form={"grant_type": "authorization_code", "code": code,
                                                      "code_verifier": verifier}, headers=auth)
        assert status == 200 and body and body.get("refresh_token"), (status, body)
        refresh_tokens.append(body["refresh_token"])
        first_access.append(body["access_token"])
    doctor = {"Authorization": f"Bearer {first_access[0]}"}
    resource_url = f"{server.url}/fhir/R4/Patient/{patient_id}"

    def updates(index: int) -> list[tuple[int, str | None]]:
        answers = []
        for r in range(ROUNDS):
            status, body = call("PUT", resource_url, headers=doctor, body={
                "resourceType": "Patient", "id": patient_id, "name": [{"family": f"T{index}-{r}"}]})
            answers.append((status, (body or {}).get("meta", {}).get("versionId") if status == 200 else None))
        return answers

    def token_requests(index: int) -> list[tuple[int, str, str | None]]:
        answers, refresh = [], refresh_tokens[index]
        for r in range(ROUNDS):
            if r % 2:
                kind, form = "system", {"grant_type": "client_credentials", "scope": SYSTEM_SCOPE}
            else:
                kind, form = "user", {"grant_type": "refresh_token", "refresh_token": refresh}
            status, body = call("POST", token_url, form=form, headers=auth)
            if status == 200 and kind == "user":
                refresh = body["refresh_token"]
            answers.append((status, kind, body.get("access_token") if status == 200 and body else None))
        return answers

    with ThreadPoolExecutor(2) as both:
        updated, issued = both.submit(together, updates), both.submit(together, token_requests)
        update_answers = [a for thread in updated.result() for a in thread]
        token_answers = [a for thread in issued.result() for a in thread]

    statuses = Counter(s for s, _ in update_answers) + Counter(s for s, _, _ in token_answers)
    assert statuses == {200: 2 * THREADS * ROUNDS}, f"{statuses}\n{server.log_tail()}"
    versions = [v for _, v in update_answers]
    assert len(set(versions)) == len(versions) == THREADS * ROUNDS
    history: list[str] = []
    while True:
        status, bundle = call("GET", f"{resource_url}/_history?_count=100&_offset={len(history)}", headers=doctor)
        assert status == 200, bundle
        page = [e["resource"]["meta"]["versionId"] for e in bundle.get("entry", [])]
        if not page:
            break
        history += page
    assert set(versions) <= set(history) and len(history) == THREADS * ROUNDS + 1

    def works(answer: tuple[int, str, str | None]) -> int:
        _, kind, token = answer
        url = f"{server.url}/oauth2/userinfo" if kind == "user" else resource_url
        return call("GET", url, headers={"Authorization": f"Bearer {token}"})[0]

    with ThreadPoolExecutor(THREADS) as pool:
        checked = Counter(pool.map(works, token_answers))
    assert checked == {200: THREADS * ROUNDS}, checked
    assert Counter(kind for _, kind, _ in token_answers) == {"user": THREADS * 13, "system": THREADS * 12}
