"""FHIR request bodies over real HTTP (gunicorn): the size limit before the body is read and while a
chunked body streams in, 413 OperationOutcomes rather than Django's HTML 400, and chunked bodies
read in full (fhir_api.body). The behaviour depends on how the WSGI server streams the body, which
the Django test client does not show."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest

from tests.e2e.conftest import client_credentials_token

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

RESOURCE_LIMIT = 2621440  # FHIR_RESOURCE_MAX_BYTES' default; DATA_UPLOAD_MAX_MEMORY_SIZE is the same


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=20)


def _head(method: str, path: str, token: str, content_type: str, framing: str) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {content_type}\r\nAccept: application/fhir+json\r\n{framing}"
            "Connection: close\r\n\r\n").encode()


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return int(lines[0].split()[1]), headers, body


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        if not int(size, 16):
            break
        out, body = out + rest[:int(size, 16)], rest[int(size, 16) + 2:]
    return out


def _send_chunked(sock: socket.socket, payload: bytes, piece: int = 64 * 1024) -> bool:
    """Send ``payload`` as HTTP chunks; False when the server closed the connection before the end."""
    try:
        for start in range(0, len(payload), piece):
            part = payload[start:start + piece]
            sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def _outcome(status: int, headers: dict[str, str], body: bytes, expected: int, code: str) -> str:
    assert status == expected, body[:500]
    assert headers["content-type"] == "application/fhir+json; charset=utf-8", headers
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == code, outcome
    return outcome["issue"][0]["details"]["text"]


def _patient(size: int, family: str = "Big") -> bytes:
    head = json.dumps({"resourceType": "Patient", "name": [{"family": family, "given": [""]}]}).encode()
    return json.dumps({"resourceType": "Patient", "name": [{"family": family, "given": ["x" * (size - len(head))]}]}
                      ).encode()


@pytest.fixture
def token(seed, live_gunicorn) -> str:
    from medplum_auth import services

    data = seed()
    backend, secret = services.create_client(data.project, "body limits", public=False)
    return client_credentials_token(live_gunicorn.url, backend.client_id, secret)


@pytest.mark.spec("RFC 9110 §15.5.14 413 Content Too Large; FHIR R4 OperationOutcome too-costly")
def test_an_oversized_content_length_is_413_before_the_body_is_sent(live_gunicorn, token):
    """Only the headers go out: the answer comes without the server waiting for a byte of the body."""
    for path, setting in (("/fhir/R4/Patient", "FHIR_RESOURCE_MAX_BYTES"), ("/fhir/R4", "FHIR_BUNDLE_MAX_BYTES")):
        with _connect(live_gunicorn.url) as sock:
            started = time.monotonic()
            sock.sendall(_head("POST", path, token, "application/fhir+json", "Content-Length: 50000000\r\n"))
            status, headers, body = _answer(sock)
            assert time.monotonic() - started < 10  # gunicorn's --timeout is 60 s: no read was waited on
        assert setting in _outcome(status, headers, body, 413, "too-costly")


def test_a_body_over_the_limit_is_413_not_djangos_html_400(live_gunicorn, token):
    """Over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (which used to answer Django's HTML 400) and over the FHIR limit."""
    from fhir_api.models import Resource

    payload = _patient(RESOURCE_LIMIT + 1)
    for method in ("POST", "PUT"):
        path = "/fhir/R4/Patient" if method == "POST" else "/fhir/R4/Patient?family=Big"
        with _connect(live_gunicorn.url) as sock:
            sock.sendall(_head(method, path, token, "application/fhir+json", f"Content-Length: {len(payload)}\r\n"))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(payload)  # the server may answer and close before the whole body is sent
            assert "FHIR_RESOURCE_MAX_BYTES" in _outcome(*_answer(sock), 413, "too-costly")
    assert not Resource.objects.filter(resource_type="Patient", content__name__0__family="Big").exists()


def test_a_chunked_body_is_read_in_full_and_refused_once_it_passes_the_limit(live_gunicorn, token):
    from fhir_api.models import Resource

    small = _patient(300_000, family="Chunked")
    with _connect(live_gunicorn.url) as sock:
        sock.sendall(_head("POST", "/fhir/R4/Patient", token, "application/fhir+json",
                           "Transfer-Encoding: chunked\r\n"))
        assert _send_chunked(sock, small)
        status, _headers, body = _answer(sock)
    assert status == 201, body[:500]
    stored = Resource.objects.get(resource_id=json.loads(body)["id"]).content
    assert stored["name"] == json.loads(small)["name"]  # not a byte lost

    with _connect(live_gunicorn.url) as sock:
        sock.sendall(_head("POST", "/fhir/R4/Patient", token, "application/fhir+json",
                           "Transfer-Encoding: chunked\r\n"))
        _send_chunked(sock, _patient(3 * RESOURCE_LIMIT, family="TooBig"))
        assert "FHIR_RESOURCE_MAX_BYTES" in _outcome(*_answer(sock), 413, "too-costly")
    assert not Resource.objects.filter(content__name__0__family="TooBig").exists()

    binary = bytes(range(256)) * 1000
    with _connect(live_gunicorn.url) as sock:
        sock.sendall(_head("POST", "/fhir/R4/Binary", token, "application/octet-stream",
                           "Transfer-Encoding: chunked\r\n"))
        assert _send_chunked(sock, binary, piece=10_000)
        status, _headers, body = _answer(sock)
    assert status == 201, body[:500]
    with _connect(live_gunicorn.url) as sock:
        sock.sendall(f"GET /fhir/R4/Binary/{json.loads(body)['id']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {token}\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode())
        status, _headers, content = _answer(sock)
    assert status == 200 and content == binary


def test_malformed_json_and_other_media_types_over_http(live_gunicorn, token):
    for content_type, payload, expected, code in (("application/fhir+json", b'{"resourceType": ', 400, "invalid"),
                                                  ("application/xml", b"<Patient/>", 415, "not-supported")):
        with _connect(live_gunicorn.url) as sock:
            sock.sendall(_head("POST", "/fhir/R4/Patient", token, content_type,
                               f"Content-Length: {len(payload)}\r\n") + payload)
            _outcome(*_answer(sock), expected, code)
