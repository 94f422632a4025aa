"""One body behaviour for every FHIR route that reads one (fhir_api.body): the size limit before
the body is read, 413/400/415 OperationOutcomes, never Django's HTML 400 (issue: oversized
single-resource bodies). The same over real HTTP, chunked too: tests/e2e/test_body_limits.py."""

from __future__ import annotations

import io
import json

import pytest

from fhir_api.checks import check_body_limits
from fhir_api.models import Resource
from tests.fhir.conftest import FHIR, FHIR_JSON, JSON_PATCH, assert_outcome, seed

pytestmark = pytest.mark.django_db

LIMIT = 600


def _patient(size: int, **fields: str) -> bytes:
    """A Patient whose JSON is exactly ``size`` bytes."""
    empty = json.dumps({"resourceType": "Patient", **fields, "name": [{"family": ""}]}).encode()
    return json.dumps({"resourceType": "Patient", **fields, "name": [{"family": "x" * (size - len(empty))}]}).encode()


@pytest.fixture
def limits(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "FHIR_RESOURCE_MAX_BYTES": LIMIT,
                             "FHIR_BUNDLE_MAX_BYTES": 4 * LIMIT}
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100  # not the FHIR limit: never Django's HTML 400
    return settings


@pytest.fixture
def routes(project1):
    """(method, path, content type, success status) of every single-resource body route."""
    seed(project1, {"resourceType": "Patient", "id": "p1"}, resource_id="p1")
    return [("post", "/Patient", FHIR_JSON, 201), ("put", "/Patient/p1", FHIR_JSON, 200),
            ("put", "/Patient?_id=p1", FHIR_JSON, 200), ("post+", "/Patient", FHIR_JSON, 200),
            ("patch", "/Patient/p1", JSON_PATCH, 200), ("post", "/Patient/$validate", FHIR_JSON, 200),
            ("post", "/Patient/p1/$validate", FHIR_JSON, 200)]


def _send(full_api, method: str, path: str, data: bytes, content_type: str, **extra):
    """``post+`` is a conditional create (``If-None-Exist`` matching Patient p1)."""
    if method == "post+":
        method, extra = "post", {"HTTP_IF_NONE_EXIST": "_id=p1", **extra}
    return getattr(full_api.client, method)(FHIR + path, data, content_type=content_type,
                                            **full_api._headers(extra))


def test_a_body_over_the_limit_is_413_on_every_route_and_nothing_is_written(full_api, limits, routes, project1):
    for method, path, content_type, _ok in routes:
        body = b"[" + b" " * (LIMIT - 1) + b"]" if content_type == JSON_PATCH else _patient(LIMIT + 1)
        response = _send(full_api, method, path, body, content_type)
        outcome = assert_outcome(response, 413, "too-costly")
        assert response["Content-Type"] == "application/fhir+json; charset=utf-8", (method, path)
        assert f"{LIMIT + 1} bytes" in outcome["issue"][0]["details"]["text"]
        assert "FHIR_RESOURCE_MAX_BYTES" in outcome["issue"][0]["details"]["text"]
    row = Resource.objects.get(project=project1, resource_type="Patient")
    assert row.version_id == 1 and Resource.objects.filter(project=project1).count() == 1


def test_a_body_at_the_limit_is_taken_though_over_data_upload_max_memory_size(full_api, limits, routes):
    """``DATA_UPLOAD_MAX_MEMORY_SIZE`` (100 here) does not bound FHIR bodies: the FHIR setting does."""
    for method, path, content_type, ok in routes:
        if content_type == JSON_PATCH:
            body = json.dumps([{"op": "add", "path": "/gender", "value": "other"}]).encode().ljust(LIMIT)
        else:
            body = _patient(LIMIT, id="p1") if path == "/Patient/p1" else _patient(LIMIT)
        response = _send(full_api, method, path, body, content_type)
        assert response.status_code == ok, (method, path, response.content)
        assert response["Content-Type"].startswith("application/fhir+json")


def test_the_declared_length_is_refused_before_the_body_is_read(full_api, limits):
    """A ``Content-Length`` over the limit is answered without reading: the test client's payload
    (2 bytes) would fail the request if more were read."""
    response = _send(full_api, "post", "/Patient", b"{}", FHIR_JSON, CONTENT_LENGTH=str(10 ** 9))
    assert "1000000000 bytes" in assert_outcome(response, 413, "too-costly")["issue"][0]["details"]["text"]


def test_a_chunked_body_is_read_from_the_dechunked_input_and_bounded_while_read(full_api, limits, project1):
    chunked = {"CONTENT_LENGTH": "", "CONTENT_TYPE": FHIR_JSON, "HTTP_TRANSFER_ENCODING": "chunked",
               "wsgi.input_terminated": True}
    small = _send(full_api, "post", "/Patient", b"", FHIR_JSON,
                  **{**chunked, "wsgi.input": io.BytesIO(_patient(200))})
    assert small.status_code == 201, small.content
    stored = Resource.objects.get(resource_id=small.json()["id"]).content
    assert stored["name"] == json.loads(_patient(200))["name"]
    big = _send(full_api, "post", "/Patient", b"", FHIR_JSON,
                **{**chunked, "wsgi.input": io.BytesIO(_patient(LIMIT + 1))})
    assert "FHIR_RESOURCE_MAX_BYTES" in assert_outcome(big, 413, "too-costly")["issue"][0]["details"]["text"]
    assert_outcome(_send(full_api, "post", "/Patient", b"", "text/plain",
                         **{**chunked, "CONTENT_TYPE": "text/plain", "wsgi.input": io.BytesIO(b"x")}),
                   415, "not-supported")
    # A server that hands the chunked body over undecoded: Django reads none of it, say so.
    assert_outcome(_send(full_api, "post", "/Patient", b"", FHIR_JSON, CONTENT_LENGTH="",
                         HTTP_TRANSFER_ENCODING="chunked"), 411, "structure")
    assert Resource.objects.filter(project=project1).count() == 1


def test_bundles_and_binaries_answer_the_same_way(full_api, limits, project1):
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"resource": json.loads(_patient(LIMIT)), "request": {"method": "POST", "url": "Patient"}}]}
    padded = json.dumps(bundle).encode().ljust(4 * LIMIT + 1)
    text = assert_outcome(_send(full_api, "post", "", padded, FHIR_JSON), 413, "too-costly")["issue"][0]
    assert "FHIR_BUNDLE_MAX_BYTES" in text["details"]["text"]
    assert _send(full_api, "post", "", json.dumps(bundle).encode(), FHIR_JSON).status_code == 200
    limits.MEDPLUM_AUTH = {**limits.MEDPLUM_AUTH, "BINARY_MAX_BYTES": 10}
    binary = assert_outcome(_send(full_api, "post", "/Binary", b"x" * 11, "text/plain"), 413, "too-costly")
    assert "BINARY_MAX_BYTES" in binary["issue"][0]["details"]["text"]
    assert Resource.objects.filter(project=project1, resource_type="Binary").count() == 0


@pytest.mark.parametrize(("body", "content_type", "status", "code"), [
    (b"{not json", FHIR_JSON, 400, "invalid"),
    (b'{"resourceType": "Patient"', "application/json", 400, "invalid"),
    (b"\xff\xfe", FHIR_JSON, 400, "invalid"),
    (b"<Patient/>", "application/fhir+xml", 415, "not-supported"),
    (b"name=x", "application/x-www-form-urlencoded", 415, "not-supported"),
    (b'{"resourceType": "Patient"}', "text/plain", 415, "not-supported"),
])
def test_malformed_bodies_are_400_and_other_media_types_415_on_every_route(full_api, routes, body, content_type,
                                                                          status, code):
    for method, path, route_type, _ok in routes:
        json_type = content_type in (FHIR_JSON, "application/json")
        sent = JSON_PATCH if route_type == JSON_PATCH and json_type else content_type
        assert_outcome(_send(full_api, method, path, body, sent), status, code)


def test_a_charset_parameter_is_accepted(full_api):
    response = _send(full_api, "post", "/Patient", _patient(100), "application/fhir+json; charset=utf-8")
    assert response.status_code == 201, response.content


def test_w026_flags_limits_that_contradict_each_other(settings):
    assert check_body_limits() == []
    for value in (0, -1, "1mb", True, None):
        settings.MEDPLUM_AUTH = {"FHIR_RESOURCE_MAX_BYTES": value}
        [message] = check_body_limits()
        assert message.id == "medplum_auth.W026" and "positive" in message.msg
    settings.MEDPLUM_AUTH = {"FHIR_RESOURCE_MAX_BYTES": 2000, "FHIR_BUNDLE_MAX_BYTES": 1000}
    [message] = check_body_limits()
    assert message.id == "medplum_auth.W026" and "FHIR_BUNDLE_MAX_BYTES" in message.msg
    # A lowered DATA_UPLOAD_MAX_MEMORY_SIZE does not bound FHIR bodies: warn while the FHIR limit is
    # left at its default, not once it is set.
    settings.MEDPLUM_AUTH = {}
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    [message] = check_body_limits()
    assert message.id == "medplum_auth.W026" and "DATA_UPLOAD_MAX_MEMORY_SIZE" in message.msg
    settings.MEDPLUM_AUTH = {"FHIR_RESOURCE_MAX_BYTES": 4096}
    assert check_body_limits() == []
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None
    settings.MEDPLUM_AUTH = {}
    assert check_body_limits() == []
