"""``/fhir/R4/Binary``: raw bytes in and out through Django's storage API, the size limit, and who may read it."""

from __future__ import annotations

import base64
import os

import pytest
from django.core.files.storage import storages

from fhir_api.models import Resource
from tests.fhir.conftest import FHIR, FHIR_JSON, Api, assert_outcome, mint

pytestmark = pytest.mark.django_db
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    return tmp_path


def _raw(api: Api, path: str, body: bytes, content_type: str, **extra: str):
    return api.client.post(FHIR + path, body, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {api.token}",
                           HTTP_ACCEPT="*/*", **extra)


def _download(api: Api, binary_id: str, accept: str = "*/*"):
    return api.client.get(f"{FHIR}/Binary/{binary_id}", HTTP_AUTHORIZATION=f"Bearer {api.token}", HTTP_ACCEPT=accept)


def test_raw_create_then_raw_read_with_the_stored_type(full_api, media, project1):
    response = _raw(full_api, "/Binary", PNG, "image/png", HTTP_X_SECURITY_CONTEXT="Patient/p1")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["resourceType"] == "Binary" and body["contentType"] == "image/png"
    assert body["securityContext"] == {"reference": "Patient/p1"}
    assert "data" not in body and body["url"].endswith(f"/fhir/R4/Binary/{body['id']}")
    assert response["Location"].endswith(f"/Binary/{body['id']}/_history/1")
    row = Resource.objects.get(project=project1, resource_type="Binary", resource_id=body["id"])
    assert "data" not in row.content and row.patient == "Patient/p1"
    # The bytes are in the configured storage, one file per version.
    name = f"fhir-binary/{project1.pk}/{body['id']}/1"
    assert storages["default"].exists(name) and (media / name).read_bytes() == PNG
    read = _download(full_api, body["id"])
    assert read.status_code == 200
    assert read["Content-Type"] == "image/png" and read["ETag"] == 'W/"1"'
    assert read["X-Content-Type-Options"] == "nosniff" and read["Content-Disposition"] == "attachment"
    assert b"".join(read.streaming_content) == PNG


def test_fhir_json_create_and_read(full_api, media):
    data = base64.b64encode(b"hello, binary").decode()
    response = full_api.post("/Binary", {"resourceType": "Binary", "contentType": "text/plain", "data": data})
    assert response.status_code == 201, response.content
    binary_id = response.json()["id"]
    assert "data" not in response.json()
    as_json = _download(full_api, binary_id, FHIR_JSON)
    assert as_json.status_code == 200 and as_json.json()["data"] == data
    assert as_json.json()["contentType"] == "text/plain"
    raw = _download(full_api, binary_id)
    assert raw["Content-Type"].startswith("text/plain") and b"".join(raw.streaming_content) == b"hello, binary"


def test_update_stores_a_new_version_and_delete(full_api, media):
    binary_id = _raw(full_api, "/Binary", b"one", "text/plain").json()["id"]
    response = full_api.client.put(f"{FHIR}/Binary/{binary_id}", b"two", content_type="application/pdf",
                                   HTTP_AUTHORIZATION=f"Bearer {full_api.token}")
    assert response.status_code == 200, response.content
    assert response.json()["meta"]["versionId"] == "2" and response.json()["contentType"] == "application/pdf"
    read = _download(full_api, binary_id)
    assert read["Content-Type"] == "application/pdf" and b"".join(read.streaming_content) == b"two"
    assert full_api.delete(f"/Binary/{binary_id}").status_code == 200
    assert_outcome(_download(full_api, binary_id, FHIR_JSON), 410, "deleted")


def test_oversized_binary_is_refused_with_an_operation_outcome(full_api, media, settings, project1):
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "BINARY_MAX_BYTES": 100}
    assert_outcome(_raw(full_api, "/Binary", b"x" * 101, "application/octet-stream"), 413, "too-costly")
    big = base64.b64encode(b"x" * 101).decode()
    assert_outcome(full_api.post("/Binary", {"resourceType": "Binary", "contentType": "text/plain", "data": big}),
                   413, "too-costly")
    assert _raw(full_api, "/Binary", b"x" * 100, "application/octet-stream").status_code == 201
    assert Resource.objects.filter(project=project1, resource_type="Binary").count() == 1
    assert len(os.listdir(media / "fhir-binary" / str(project1.pk))) == 1


@pytest.mark.parametrize("body", [
    {"resourceType": "Binary", "contentType": "text/plain", "data": "not base64!"},
    {"resourceType": "Binary", "contentType": "text/plain", "data": 5},
    {"resourceType": "Binary", "data": "aGk="},  # contentType is required
    {"resourceType": "Patient"},
    [],
])
def test_bad_fhir_json_binary_is_400(full_api, media, body):
    assert_outcome(full_api.post("/Binary", body), 400, "invalid")


def test_another_patients_binary_is_404(client, media, app1, project1, alice, bob):
    """``patient/*`` scopes reach a Binary through its securityContext (the Patient compartment)."""
    system = Api(client, mint(client=app1, scope="system/*.cruds"))
    mine = _raw(system, "/Binary", b"alice's", "text/plain", HTTP_X_SECURITY_CONTEXT=alice.profile).json()["id"]
    theirs = _raw(system, "/Binary", b"bob's", "text/plain", HTTP_X_SECURITY_CONTEXT=bob.profile).json()["id"]
    nobody = _raw(system, "/Binary", b"no one's", "text/plain").json()["id"]
    alice.access_policy = None
    alice.save()
    api = Api(client, mint(client=app1, membership=alice, scope="openid patient/*.rs"))
    own = _download(api, mine)
    assert own.status_code == 200 and b"".join(own.streaming_content) == b"alice's"
    for other in (theirs, nobody):
        assert_outcome(_download(api, other), 404, "not-found")
        assert_outcome(_download(api, other, FHIR_JSON), 404, "not-found")
    listed = api.get("/Binary").json()
    assert [e["resource"]["id"] for e in listed.get("entry", [])] == [mine]


def test_binary_needs_a_token_and_a_grant(client, media, app1, alice):
    assert _raw(Api(client, "nope"), "/Binary", b"x", "text/plain").status_code == 401
    # The demo-style patient policy grants no Binary: 403 before the upload is read.
    api = Api(client, mint(client=app1, membership=alice, scope="openid"))
    assert_outcome(_raw(api, "/Binary", b"x", "text/plain"), 403, "forbidden")


def test_missing_binary_is_404(full_api, media):
    assert_outcome(_download(full_api, "does-not-exist"), 404, "not-found")


def test_system_checks_of_the_binary_settings(settings):
    from fhir_api.checks import check_binary_settings

    assert check_binary_settings() == []
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "BINARY_STORAGE": "s3", "BINARY_MAX_BYTES": 0}
    assert [m.id for m in check_binary_settings()] == ["medplum_auth.W028", "medplum_auth.W029"]
    settings.STORAGES = {**settings.STORAGES, "s3": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "BINARY_MAX_BYTES": 5}
    assert check_binary_settings() == []


def test_another_storage_backend_through_the_setting(full_api, settings):
    """Any Django storage works (django-storages backends alike): here Django's in-memory one."""
    settings.STORAGES = {**settings.STORAGES, "memory": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    settings.MEDPLUM_AUTH = {**settings.MEDPLUM_AUTH, "BINARY_STORAGE": "memory"}
    binary_id = _raw(full_api, "/Binary", b"in memory", "text/plain").json()["id"]
    assert b"".join(_download(full_api, binary_id).streaming_content) == b"in memory"
    dirs, _files = storages["memory"].listdir("fhir-binary")
    assert dirs  # the project's folder
