"""DRF JSON parsers with bounded size and nesting (``medplum_auth.jsonbody``).

DRF reads a body from the request stream, which Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` does not
limit (only ``request.body`` and form parsing are), and its ``JSONParser`` lets a deeply nested
body's ``RecursionError`` escape as a 500. These parsers answer 413 and 400 instead.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser

from ... import jsonbody


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "too_large"


class BoundedJSONParser(JSONParser):
    """``application/json`` up to ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes and ``jsonbody.MAX_DEPTH`` levels."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        data = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise RequestTooLarge(f"Request body larger than {limit} bytes.")
        try:
            return jsonbody.loads(data)
        except jsonbody.JSONError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
