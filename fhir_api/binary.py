"""``/fhir/R4/Binary``: raw content in, raw content out, through the one resource path.

A Binary is a resource like any other (versions, access policy, audit), whose JSON is stored
without ``data``; the bytes are kept through Django's storage API (``MEDPLUM_AUTH["BINARY_STORAGE"]``,
an alias of ``STORAGES``: the file system by default, any django-storages backend in production),
one file per version, streamed in and out.

* ``POST /Binary`` with any ``Content-Type`` but FHIR JSON: the body is the content (``@medplum/core``'s
  ``createBinary``; ``X-Security-Context`` sets ``securityContext``); with ``application/fhir+json``,
  a Binary resource whose ``data`` is the content (base64).
* ``GET /Binary/<id>``: the bytes with the stored ``Content-Type`` (``download()`` asks ``*/*``),
  unless the client asks for FHIR JSON (``Accept: application/fhir+json``): then the Binary with ``data``.
* Who may read it: the access policy and, for ``patient/`` scopes, the Patient compartment, which
  for a Binary is the Patient its ``securityContext`` names (``fhir_api/data/server-search-parameters.json``).
* Size: at most ``MEDPLUM_AUTH["BINARY_MAX_BYTES"]``, refused (413 ``too-costly``) from ``Content-Length`` or as
  soon as the stream passes it (:mod:`fhir_api.body`; chunked uploads too).
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from collections.abc import Iterator
from typing import Any

from django.core.files import File
from django.core.files.storage import Storage, storages
from django.db import transaction
from django.http import FileResponse, HttpResponse
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response

from medplum_auth.conf import auth_settings
from medplum_auth.contrib.rest_framework.exceptions import InvalidResource

from . import body
from .interactions import base as _base
from .interactions import if_match
from .repository import Found, Repository
from .views import FhirView, _headers, version_headers


def _resource_headers(row: Any) -> dict[str, str]:
    return version_headers(row.version_id, row.last_updated)


def _if_match(request: Any) -> int | None:
    return if_match(_headers(request))


BINARY = "Binary"
FHIR_JSON_TYPES = ("application/fhir+json", "application/json+fhir")
LIMIT = "BINARY_MAX_BYTES"


class RawParser(BaseParser):
    """Accepts any media type; the view reads the stream itself (never ``request.data``)."""

    media_type = "*/*"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        return stream


def storage() -> Storage:
    return storages[auth_settings.BINARY_STORAGE]


def _name(project_id: Any, resource_id: str, version_id: int) -> str:
    return f"fhir-binary/{project_id}/{resource_id}/{version_id}"


def _spool(chunks: Iterator[bytes]) -> tempfile.SpooledTemporaryFile:
    """The content in a temporary file (in memory while small), refused past ``BINARY_MAX_BYTES``."""
    spooled = tempfile.SpooledTemporaryFile(max_size=1024 * 1024)  # noqa: SIM115 - returned open, closed by _save
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > auth_settings.BINARY_MAX_BYTES:
            spooled.close()
            raise body.too_large(LIMIT)
        spooled.write(chunk)
    spooled.seek(0)
    return spooled


def _content_type(request: Request) -> str:
    return (request.content_type or "application/octet-stream").split(";")[0].strip().lower() or \
        "application/octet-stream"


def _from_request(request: Request) -> tuple[dict[str, Any], tempfile.SpooledTemporaryFile]:
    """The Binary resource (without ``data``) and its content, from a raw or a FHIR JSON body."""
    if _content_type(request) in FHIR_JSON_TYPES:
        parsed = body.read_json(request.META, body.raw_stream(request), LIMIT,
                                limit=auth_settings.BINARY_MAX_BYTES * 4 // 3 + 4096)  # base64 and the JSON around it
        if not isinstance(parsed, dict):
            raise InvalidResource("The request body must be a Binary resource (a JSON object)")
        resource = dict(parsed)
        data = resource.pop("data", "")
        if not isinstance(data, str):
            raise InvalidResource("Binary.data must be base64 text", expression="Binary.data")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidResource("Binary.data is not valid base64", expression="Binary.data") from None
        return resource, _spool(iter([raw]))
    resource: dict[str, Any] = {"resourceType": BINARY, "contentType": _content_type(request)}
    context = request.META.get("HTTP_X_SECURITY_CONTEXT")
    if context:
        resource["securityContext"] = {"reference": context}
    return resource, _spool(body.chunks(request.META, body.raw_stream(request), LIMIT))


def _save(repo: Repository, row: Any, content: tempfile.SpooledTemporaryFile) -> None:
    try:
        storage().save(_name(repo.project_id, row.resource_id, row.version_id), File(content))
    finally:
        content.close()


def _json(repo: Repository, found: Found) -> dict[str, Any]:
    resource = repo.present(BINARY, found.content)
    with storage().open(_name(repo.project_id, found.resource_id, found.version_id), "rb") as stored:
        resource = {**resource, "data": base64.b64encode(stored.read()).decode("ascii")}
    return resource


def _created(resource: dict[str, Any]) -> dict[str, Any]:
    """The stored Binary as answered on a write, with ``url`` (Medplum's: where ``download()`` fetches it)."""
    return {**resource, "url": f"{_base()}/{BINARY}/{resource['id']}"}


def _wants_json(request: Request) -> bool:
    accept = request.META.get("HTTP_ACCEPT", "")
    return any(t.split(";")[0].strip().lower() in FHIR_JSON_TYPES for t in accept.split(","))


class BinaryTypeView(FhirView):
    """``POST /Binary`` (raw or FHIR JSON); ``GET /Binary`` searches as any type."""

    interactions = {"GET": "search", "POST": "create"}
    parser_classes = [RawParser]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, resource_type=BINARY, **kwargs)

    def get(self, request: Request) -> Response:
        from .views import TypeView

        return TypeView.get(self, request, BINARY)

    def post(self, request: Request) -> Response:
        repo = self.repository()
        repo.decide(BINARY, "create")  # 403 before the upload is read
        resource, content = _from_request(request)
        with transaction.atomic():
            row = repo.create(BINARY, resource)
            _save(repo, row, content)
        headers = _resource_headers(row)
        headers["Location"] = f"{_base()}/{BINARY}/{row.resource_id}/_history/{row.version_id}"
        return Response(_created(repo.present(BINARY, row.content)), status=201, headers=headers)


class BinaryInstanceView(FhirView):
    """``GET /Binary/<id>`` (raw, or FHIR JSON when asked), ``PUT`` (new content), ``DELETE``."""

    interactions = {"GET": "read", "PUT": "update", "DELETE": "delete"}
    parser_classes = [RawParser]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, resource_type=BINARY, **kwargs)

    def get(self, request: Request, resource_id: str) -> HttpResponse:
        repo = self.repository()
        found = repo.read(BINARY, resource_id)
        headers = _resource_headers(found)
        if _wants_json(request):
            return Response(_json(repo, found), headers=headers)
        stored = storage().open(_name(repo.project_id, found.resource_id, found.version_id), "rb")
        content_type = found.content.get("contentType") or "application/octet-stream"
        response = FileResponse(stored, content_type=content_type, headers=headers)
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Disposition"] = "attachment"  # never rendered as a page of this origin
        return response

    def put(self, request: Request, resource_id: str) -> Response:
        repo = self.repository()
        repo.decide(BINARY, "update")
        resource, content = _from_request(request)
        resource["id"] = resource_id
        with transaction.atomic():
            row = repo.update(BINARY, resource_id, resource, if_match=_if_match(request))
            _save(repo, row, content)
        return Response(_created(repo.present(BINARY, row.content)), headers=_resource_headers(row))

    def delete(self, request: Request, resource_id: str) -> Response:
        from .views import InstanceView

        return InstanceView.delete(self, request, BINARY, resource_id)
