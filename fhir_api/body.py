"""Request bodies under ``/fhir/R4``: one size limit, one way of reading, one set of answers.

Every route that reads a body (create, update, patch, the conditional ones, ``$validate``,
batch/transaction Bundles, Binary) reads it here, never through ``request.body``: Django refuses a
``request.body`` over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` with its own HTML 400, and DRF 3.18 reads
``request.body`` for every ``JSONParser``. The limit is the route's setting
(``FHIR_RESOURCE_MAX_BYTES``, ``FHIR_BUNDLE_MAX_BYTES``, ``BINARY_MAX_BYTES``):

* a ``Content-Length`` over it is a 413 OperationOutcome (``too-costly``) before a byte is read;
* a body without ``Content-Length`` (``Transfer-Encoding: chunked``), which Django does not read at
  all, is read from the WSGI server's de-chunked input (``wsgi.input_terminated``, as gunicorn
  gives it) and refused as soon as it passes the limit; a server that does not de-chunk: 411;
* a body that is not JSON is a 400, a media type no parser takes a 415 (DRF's negotiation).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from django.http import UnreadablePostError
from rest_framework import exceptions
from rest_framework.parsers import BaseParser
from rest_framework.request import Request

from medplum_auth import jsonbody
from medplum_auth.conf import auth_settings
from medplum_auth.contrib.rest_framework.exceptions import FhirError

CHUNK = 64 * 1024
RESOURCE_LIMIT = "FHIR_RESOURCE_MAX_BYTES"


class TooLarge(FhirError):
    """413: a body, or a Bundle's entry count, beyond the route's limit."""

    status_code = 413
    issue_code = "too-costly"
    outcome_id = "too-large"


class LengthRequired(FhirError):
    """411: a chunked body the WSGI server hands over without de-chunking it (Django reads none)."""

    status_code = 411
    issue_code = "structure"
    outcome_id = "length-required"
    default_detail = "Send the request body with a Content-Length (this server cannot read a chunked body)"


def too_large(setting: str, size: int | None = None, limit: int | None = None) -> TooLarge:
    limit = getattr(auth_settings, setting) if limit is None else limit
    what = f"The request body is {size} bytes" if size is not None else "The request body is too large"
    return TooLarge(f"{what}; this server takes at most {limit} ({setting})")


def declared_length(meta: dict[str, Any]) -> int | None:
    """The ``Content-Length`` the client sent, ``None`` when absent or not a number."""
    value = str(meta.get("CONTENT_LENGTH") or "").strip()
    return int(value) if value.isdigit() else None


def is_chunked(meta: dict[str, Any]) -> bool:
    return declared_length(meta) is None and "chunked" in str(meta.get("HTTP_TRANSFER_ENCODING", "")).lower()


def raw_stream(request: Any) -> BinaryIO | None:
    """The body as a stream: Django's (bounded by ``Content-Length``), or for a chunked body the
    WSGI input the server already de-chunked; ``None`` when there is no body."""
    if is_chunked(request.META):
        if not request.META.get("wsgi.input_terminated"):
            raise LengthRequired()
        return request.META["wsgi.input"]
    return request.stream


def chunks(meta: dict[str, Any], stream: BinaryIO | None, setting: str, limit: int | None = None) -> Iterator[bytes]:
    """``stream`` in chunks, refused (413) from ``Content-Length`` or as soon as it passes the limit
    (``setting``'s value unless ``limit`` is given: base64 content is larger than what it encodes)."""
    limit = getattr(auth_settings, setting) if limit is None else limit
    declared = declared_length(meta)
    if declared is not None and declared > limit:
        raise too_large(setting, declared, limit)
    size = 0
    while stream is not None and (chunk := stream.read(CHUNK)):
        size += len(chunk)
        if size > limit:
            raise too_large(setting, None, limit)
        yield chunk


def discard_unread(request: Any) -> None:
    """Read and drop what an answered request left of its body (a 401, or a 413 from
    ``Content-Length``, is sent before reading it). gunicorn's sync worker closes the connection
    after the answer; bytes left unread make the kernel reset it, and a proxy still sending the body
    (nginx) then answers 502 instead of ours. Only bodies such a proxy passes: ``Content-Length`` up
    to the largest limit plus 1 MiB (``docs/nginx.conf``); a larger one is closed on as before."""
    declared = declared_length(request.META)
    largest = max(auth_settings.FHIR_RESOURCE_MAX_BYTES, auth_settings.FHIR_BUNDLE_MAX_BYTES,
                  auth_settings.BINARY_MAX_BYTES)
    if not declared or declared > largest + 1024 * 1024:
        return
    try:
        while request.read(CHUNK):
            pass
    except (OSError, UnreadablePostError):
        pass  # the client went away: nothing left to protect


def read_json(meta: dict[str, Any], stream: BinaryIO | None, setting: str, limit: int | None = None) -> Any:
    """The body parsed as JSON within the limit (400 when it is not JSON)."""
    try:
        return jsonbody.loads(b"".join(chunks(meta, stream, setting, limit)))
    except jsonbody.JSONError as exc:
        raise exceptions.ParseError(f"JSON parse error - {exc}") from None


def data(request: Request) -> Any:
    """The parsed body: ``request.data``, or for a chunked body (DRF, like Django, reads none without
    ``Content-Length``) the negotiated parser over the de-chunked input."""
    if not is_chunked(request.META):
        return request.data
    stream = raw_stream(request)
    parser = request.negotiator.select_parser(request, request.parsers)
    if parser is None:
        raise exceptions.UnsupportedMediaType(request.content_type)
    return parser.parse(stream, request.content_type, request.parser_context)


class BodyParser(BaseParser):
    """JSON of one media type, read by :func:`read_json` within the view's ``body_limit`` setting
    (``FHIR_RESOURCE_MAX_BYTES`` unless the view names another)."""

    media_type = "application/fhir+json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        context = parser_context or {}
        setting = getattr(context.get("view"), "body_limit", RESOURCE_LIMIT)
        return read_json(context["request"].META, stream, setting)


class FhirJSONParser(BodyParser):
    media_type = "application/fhir+json"


class JSONParser(BodyParser):
    media_type = "application/json"


class JSONPatchParser(BodyParser):
    """RFC 6902 patch documents, the body ``@medplum/core``'s ``patchResource`` sends."""

    media_type = "application/json-patch+json"
