"""The FHIR R4 REST API (``/fhir/R4``) on DRF: thin views over :mod:`fhir_api.repository`.

Authentication is the provider's Bearer access token; the type-level decision is
:class:`AccessPolicyPermission` (403); instance filtering, field rules and versioning happen in
the repository. Every error is an OperationOutcome (one exception handler).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.http import http_date
from django.views.decorators.http import require_GET
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.mediatypes import media_type_matches, order_by_precedence
from rest_framework.views import APIView

from medplum_auth.conf import auth_settings
from medplum_auth.contrib.rest_framework.authentication import BearerAuthentication
from medplum_auth.contrib.rest_framework.exceptions import (
    InvalidResource,
    PreconditionFailed,
    ResourceNotFound,
    exception_handler,
    operation_outcome,
)
from medplum_auth.contrib.rest_framework.parsers import BoundedJSONParser
from medplum_auth.contrib.rest_framework.permissions import AccessPolicyPermission, get_policy

from . import capability
from .models import Resource, ResourceVersion
from .query import Condition, Include, SearchError, parse_condition, parse_include, parse_revinclude
from .repository import MAX_REVINCLUDES, Found, Repository, format_instant
from .search_params import SEARCH_PARAMETERS

DEFAULT_COUNT = 20
MAX_COUNT = 100
MAX_OFFSET = 10_000  # deeper pages: narrow the search (an offset scans every row before it)
PAGING_PARAMS = {"_count", "_offset", "_page"}
IGNORED_PARAMS = {"_format", "_pretty", "_total"}
IF_MATCH_RE = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


class FhirJSONRenderer(JSONRenderer):
    media_type = "application/fhir+json"
    format = "fhir+json"
    charset = "utf-8"


class FhirJSONParser(BoundedJSONParser):
    media_type = "application/fhir+json"


class JSONPatchParser(BoundedJSONParser):
    """RFC 6902 patch documents, the body ``@medplum/core``'s ``patchResource`` sends."""

    media_type = "application/json-patch+json"


class FhirContentNegotiation(BaseContentNegotiation):
    """``application/fhir+json`` unless the client prefers ``application/json``; never a 406."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        for parser in parsers:
            if media_type_matches(parser.media_type, request.content_type):
                return parser
        return None

    def select_renderer(self, request: Request, renderers: list[Any], format_suffix: str | None = None) -> Any:
        header = request.META.get("HTTP_ACCEPT", "*/*")
        accepts = [token.strip() for token in header.split(",") if token.strip()]
        for media_type_set in order_by_precedence(accepts):
            for renderer in renderers:
                for media_type in media_type_set:
                    if media_type_matches(renderer.media_type, media_type):
                        return renderer, renderer.media_type
        return renderers[0], renderers[0].media_type


class FhirView(APIView):
    """Base of the FHIR endpoints: Bearer tokens, the effective policy, FHIR JSON, OperationOutcomes."""

    authentication_classes = [BearerAuthentication]
    permission_classes = [AccessPolicyPermission]
    renderer_classes = [FhirJSONRenderer, JSONRenderer]
    parser_classes = [FhirJSONParser, BoundedJSONParser]
    content_negotiation_class = FhirContentNegotiation
    throttle_classes: list[Any] = []
    interactions: dict[str, str] = {}
    resource_type: str | None = None

    def get_exception_handler(self) -> Any:
        return exception_handler

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        requested = kwargs.get("resource_type")
        self.resource_type = requested if requested in SEARCH_PARAMETERS else None
        super().initial(request, *args, **kwargs)  # 401 before anything else
        if requested is not None and self.resource_type is None:
            raise ResourceNotFound(f"Unknown resource type {requested}")

    def get_fhir_target(self, request: Request) -> tuple[str, str] | None:
        interaction = self.interactions.get(request.method or "")
        if self.resource_type is None or interaction is None:
            return None
        return self.resource_type, interaction

    def repository(self) -> Repository:
        return Repository(self.request.auth.login.project_id, get_policy(self.request))

    def json_response(self, text: str, headers: dict[str, str] | None = None) -> HttpResponse:
        """JSON text already produced (a stored resource, a Bundle spliced around them), sent as
        it is, with the Content-Type DRF's ``Response`` would give the negotiated renderer."""
        renderer = self.request.accepted_renderer
        content_type = f"{renderer.media_type}; charset={renderer.charset}" if renderer.charset else renderer.media_type
        return HttpResponse(text.encode("utf-8"), content_type=content_type, headers=headers)


def _resource_headers(row: Found | Resource | ResourceVersion) -> dict[str, str]:
    return {"ETag": f'W/"{row.version_id}"', "Last-Modified": http_date(row.last_updated.timestamp())}


def _if_match(request: Request) -> int | None:
    header = request.META.get("HTTP_IF_MATCH")
    if header is None or header.strip() == "*":  # RFC 9110 §13.1.1: "*" matches any current version
        return None
    match = IF_MATCH_RE.match(header)
    if match is None:
        raise PreconditionFailed("If-Match must be a version ETag like W/\"1\"")
    return int(match.group(1))


def _int_param(name: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise InvalidResource(f"{name} must be an integer of at least {minimum}", expression=name)
    return number


def _base() -> str:
    return auth_settings.fhir_base_url


class Paging:
    """A searchset's ``_count`` and ``_offset`` or ``_page``, read as the parameters come, and its
    ``self``/``first``/``next``/``previous`` links: one rule for every search this API answers."""

    def __init__(self) -> None:
        self.count = DEFAULT_COUNT
        self._offset: int | None = None
        self._page: int | None = None

    def take(self, key: str, value: str) -> bool:
        """Read ``key`` if it is a paging parameter (a 400 when its value is not a valid number)."""
        if key == "_count":
            self.count = min(_int_param(key, value, 0), MAX_COUNT)
        elif key == "_offset":
            self._offset = _int_param(key, value, 0)
        elif key == "_page":
            self._page = _int_param(key, value, 1)
        else:
            return False
        return True

    def offset(self) -> int:
        """Where the page starts; a 400 beyond :data:`MAX_OFFSET` (deeper pages scan every row before)."""
        offset = self._offset if self._offset is not None else ((self._page - 1) * self.count if self._page else 0)
        if offset > MAX_OFFSET:
            raise InvalidResource(f"Search offset {offset} exceeds the maximum of {MAX_OFFSET}; narrow the search",
                                  expression="_page" if self._offset is None else "_offset")
        return offset

    def links(self, url: str, kept: list[tuple[str, str]], offset: int, *, more: bool,
              total_only: bool) -> list[dict[str, str]]:
        """The Bundle links of the page at ``offset`` of ``url``; ``more``: a next page exists."""
        kept_query = urlencode(kept)

        def link(relation: str, at: int) -> dict[str, str]:
            query = f"_count={self.count}&_offset={at}"
            return {"relation": relation, "url": f"{url}?{kept_query}&{query}" if kept_query else f"{url}?{query}"}

        links = [link("self", offset)]
        if not total_only:
            links.append(link("first", 0))
            if self.count and more:
                links.append(link("next", offset + self.count))
            if offset > 0 and self.count:
                links.append(link("previous", max(offset - self.count, 0)))
        return links


def _criteria(resource_type: str, query: str, header: str) -> list[Condition]:
    """Search criteria from a header holding a query string (``If-None-Exist``); 400 when unusable."""
    query = query.strip().lstrip("?")
    if "?" in query:  # also accept "Patient?identifier=…", the form some clients send
        named, _, query = query.partition("?")
        if named != resource_type:
            raise InvalidResource(f"{header} must search {resource_type}", expression=header)
    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        raise InvalidResource(f"{header} needs search criteria", expression=header)
    try:
        return [parse_condition(resource_type, key, value) for key, value in pairs]
    except SearchError as exc:
        raise InvalidResource(f"{header}: {exc}", expression=header) from None


def _entry(repo: Repository, base: str, found: Found, mode: str) -> str:
    """A searchset entry as JSON text, around the resource's stored text."""
    url = json.dumps(f"{base}/{found.resource_type}/{found.resource_id}", ensure_ascii=False)
    return f'{{"fullUrl":{url},"resource":{repo.present_json(found)},"search":{{"mode":"{mode}"}}}}'


class TypeView(FhirView):
    """``GET /<Type>`` search (searchset Bundle), ``POST /<Type>`` create."""

    interactions = {"GET": "search", "POST": "create"}

    def get(self, request: Request, resource_type: str) -> Response:
        conditions: list[Condition] = []
        includes: list[Include] = []
        revincludes: list[Include] = []
        kept: list[tuple[str, str]] = []
        paging, sort, summary = Paging(), None, None
        for key, values in request.query_params.lists():
            value = values[-1]
            if paging.take(key, value):
                continue
            if key == "_sort":
                if value not in ("_lastUpdated", "-_lastUpdated"):
                    raise InvalidResource(f"Unsupported _sort {value!r} (use _lastUpdated or -_lastUpdated)",
                                          expression="_sort")
                sort = value
                kept.append((key, value))
            elif key == "_summary":
                if value not in ("count", "false"):
                    raise InvalidResource(f"Unsupported _summary {value!r}", expression="_summary")
                summary = value
                kept.append((key, value))
            elif key in IGNORED_PARAMS:
                continue
            elif key in ("_include", "_revinclude"):
                parse, found = (parse_include, includes) if key == "_include" else (parse_revinclude, revincludes)
                for raw in values:
                    try:
                        found.append(parse(resource_type, raw))
                    except SearchError as exc:
                        raise InvalidResource(str(exc), expression=exc.param) from None
                    kept.append((key, raw))
            else:
                for raw in values:
                    try:
                        conditions.append(parse_condition(resource_type, key, raw))
                    except SearchError as exc:
                        raise InvalidResource(str(exc), expression=exc.param) from None
                    kept.append((key, raw))
        offset, count = paging.offset(), paging.count
        total_only = summary == "count"
        repo = self.repository()
        result = repo.search(resource_type, conditions, sort=sort, offset=offset, count=count, total_only=total_only)

        base = _base()
        links = paging.links(f"{base}/{resource_type}", kept, offset, more=offset + count < result.total,
                             total_only=total_only)
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": result.total,
                                  "link": links}
        if total_only:
            return Response(bundle)
        # Included resources: after the matches, not counted in ``total`` (FHIR R4 search, _include).
        included = repo.include(resource_type, result.rows, includes)
        revincluded, truncated = [], False
        if revincludes:
            seen = {(row.resource_type, row.resource_id) for row in [*result.rows, *included]}
            revincluded, truncated = repo.revinclude(resource_type, result.rows, revincludes, seen)
        entries = [_entry(repo, base, row, "match") for row in result.rows]
        entries += [_entry(repo, base, row, "include") for row in [*included, *revincluded]]
        if truncated:
            warning = operation_outcome("informational", f"Only the first {MAX_REVINCLUDES} _revinclude resources "
                                        "are included; narrow the search or page through it", severity="warning")
            entries.append(json.dumps({"resource": warning, "search": {"mode": "outcome"}}, separators=(",", ":")))
        head = json.dumps(bundle, separators=(",", ":"), ensure_ascii=False)
        return self.json_response(f'{head[:-1]},"entry":[{",".join(entries)}]}}')

    def post(self, request: Request, resource_type: str) -> Response:
        """Create; with ``If-None-Exist: <search>`` a conditional create (FHIR R4 §3.1.0.8.1):
        200 with the one match, 201 when none, 412 when several."""
        repo = self.repository()
        condition = request.META.get("HTTP_IF_NONE_EXIST")
        if condition is None:
            row = repo.create(resource_type, request.data)
        else:
            row = repo.create_if_none_exist(resource_type, request.data,
                                            _criteria(resource_type, condition, "If-None-Exist"))
        headers = _resource_headers(row)
        headers["Location"] = f"{_base()}/{resource_type}/{row.resource_id}/_history/{row.version_id}"
        if isinstance(row, Found):  # it exists already
            return self.json_response(repo.present_json(row), headers)
        return Response(repo.present(resource_type, row.content), status=201, headers=headers)


class InstanceView(FhirView):
    """``GET``/``PUT``/``DELETE /<Type>/<id>``."""

    interactions = {"GET": "read", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
    parser_classes = [FhirJSONParser, BoundedJSONParser, JSONPatchParser]

    def get(self, request: Request, resource_type: str, resource_id: str) -> Response:
        repo = self.repository()
        found = repo.read(resource_type, resource_id)
        return self.json_response(repo.present_json(found), _resource_headers(found))

    def put(self, request: Request, resource_type: str, resource_id: str) -> Response:
        repo = self.repository()
        row = repo.update(resource_type, resource_id, request.data, if_match=_if_match(request))
        return Response(repo.present(resource_type, row.content),
                        headers=_resource_headers(row))

    def patch(self, request: Request, resource_type: str, resource_id: str) -> Response:
        """JSON Patch (``application/json-patch+json``); other bodies (FHIRPath Patch) → 415."""
        if request.content_type.split(";")[0].strip().lower() != JSONPatchParser.media_type:
            raise exceptions.UnsupportedMediaType(request.content_type,
                                                  detail="PATCH needs a JSON Patch (application/json-patch+json)")
        repo = self.repository()
        row = repo.patch(resource_type, resource_id, request.data, if_match=_if_match(request))
        return Response(repo.present(resource_type, row.content), headers=_resource_headers(row))

    def delete(self, request: Request, resource_type: str, resource_id: str) -> Response:
        self.repository().delete(resource_type, resource_id, if_match=_if_match(request))
        return Response(operation_outcome("informational", "All OK", outcome_id="allok", severity="information"))


class HistoryView(FhirView):
    """``GET /<Type>/<id>/_history``: a history Bundle, newest version first."""

    interactions = {"GET": "history"}

    def get(self, request: Request, resource_type: str, resource_id: str) -> Response:
        count, offset = MAX_COUNT, 0
        for key, values in request.query_params.lists():
            if key == "_count":
                count = min(_int_param(key, values[-1], 0), MAX_COUNT)
            elif key == "_offset":
                offset = _int_param(key, values[-1], 0)
            elif key not in IGNORED_PARAMS:
                raise InvalidResource(f"Unsupported parameter {key!r} for _history", expression=key)
        repo = self.repository()
        versions = repo.history(resource_type, resource_id)
        url = f"{_base()}/{resource_type}/{resource_id}"
        entries = []
        for version in versions[offset:offset + count]:
            method = "DELETE" if version.deleted else ("POST" if version.version_id == 1 else "PUT")
            entry: dict[str, Any] = {"fullUrl": url}
            if not version.deleted:
                entry["resource"] = repo.present(resource_type, version.content)
            entry["request"] = {"method": method, "url": f"{resource_type}" if method == "POST" else
                                f"{resource_type}/{resource_id}"}
            entry["response"] = {"status": {"POST": "201", "PUT": "200", "DELETE": "204"}[method],
                                 "etag": f'W/"{version.version_id}"',
                                 "lastModified": format_instant(version.last_updated)}
            entries.append(entry)
        links = [{"relation": "self", "url": f"{url}/_history?{urlencode({'_count': count, '_offset': offset})}"}]
        if count and offset + count < len(versions):
            links.append({"relation": "next",
                          "url": f"{url}/_history?{urlencode({'_count': count, '_offset': offset + count})}"})
        if offset > 0 and count:
            links.append({"relation": "previous",
                          "url": f"{url}/_history?{urlencode({'_count': count, '_offset': max(offset - count, 0)})}"})
        return Response({"resourceType": "Bundle", "type": "history", "total": len(versions), "link": links,
                         "entry": entries})


class VersionView(FhirView):
    """``GET /<Type>/<id>/_history/<vid>`` (vread)."""

    interactions = {"GET": "vread"}

    def get(self, request: Request, resource_type: str, resource_id: str, version_id: str) -> Response:
        repo = self.repository()
        version = repo.vread(resource_type, resource_id, version_id)
        return Response(repo.present(resource_type, version.content),
                        headers=_resource_headers(version))


class MetadataView(APIView):
    """``GET /metadata``: public, as FHIR clients read it before they have a token."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    renderer_classes = [FhirJSONRenderer, JSONRenderer]
    content_negotiation_class = FhirContentNegotiation
    throttle_classes: list[Any] = []

    def get_exception_handler(self) -> Any:
        return exception_handler

    def get(self, request: Request) -> Response:
        return Response(capability.capability_statement())


class NotFoundView(MetadataView):
    """Any other path under ``/fhir/R4``: a 404 OperationOutcome rather than an HTML page."""

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise ResourceNotFound()

    post = put = patch = delete = get


@require_GET
def smart_configuration(request: HttpRequest) -> JsonResponse:
    """SMART App Launch 2.2 §2.1: JSON whatever the ``Accept`` header, readable from any origin."""
    response = JsonResponse(capability.smart_configuration())
    response["Access-Control-Allow-Origin"] = "*"
    response["Cache-Control"] = "public, max-age=300"
    return response
