"""The FHIR R4 REST API (``/fhir/R4``) on DRF: thin views over :mod:`fhir_api.interactions`
(the functions batch and transaction entries run too) and :mod:`fhir_api.operations`.

Authentication is the provider's Bearer access token; the type-level decision is
:class:`AccessPolicyPermission` (403); instance filtering, field rules and versioning happen in
the repository. Every error is an OperationOutcome (one exception handler).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.http import http_date
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.mediatypes import media_type_matches, order_by_precedence
from rest_framework.views import APIView

from medplum_auth.contrib.rest_framework.authentication import BearerAuthentication
from medplum_auth.contrib.rest_framework.exceptions import (
    ResourceNotFound,
    exception_handler,
)
from medplum_auth.contrib.rest_framework.permissions import AccessPolicyPermission, get_policy

from . import bundles, capability, operations
from . import interactions as rest
from .body import FhirJSONParser, JSONParser, JSONPatchParser, discard_unread
from .body import data as body
from .interactions import Answer, Params
from .repository import Repository
from .search_params import SEARCH_PARAMETERS

HEADERS = (("If-Match", "HTTP_IF_MATCH"), ("If-None-Match", "HTTP_IF_NONE_MATCH"),
           ("If-None-Exist", "HTTP_IF_NONE_EXIST"), ("If-Modified-Since", "HTTP_IF_MODIFIED_SINCE"))


class FhirJSONRenderer(JSONRenderer):
    media_type = "application/fhir+json"
    format = "fhir+json"
    charset = "utf-8"


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
    parser_classes = [FhirJSONParser, JSONParser]
    content_negotiation_class = FhirContentNegotiation
    throttle_classes: list[Any] = []
    interactions: dict[str, str] = {}
    resource_type: str | None = None
    body_limit = "FHIR_RESOURCE_MAX_BYTES"  # the setting that bounds a request body (fhir_api.body)

    def get_exception_handler(self) -> Any:
        return exception_handler

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        discard_unread(request)  # an answer sent before the body was read must still reach a proxy
        return super().finalize_response(request, response, *args, **kwargs)

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

    def json_response(self, text: str, headers: dict[str, str] | None = None, status: int = 200) -> HttpResponse:
        """JSON text already produced (a stored resource, a Bundle spliced around them), sent as
        it is, with the Content-Type DRF's ``Response`` would give the negotiated renderer."""
        renderer = self.request.accepted_renderer
        content_type = f"{renderer.media_type}; charset={renderer.charset}" if renderer.charset else renderer.media_type
        return HttpResponse(text.encode("utf-8"), content_type=content_type, headers=headers, status=status)

    def respond(self, answer: Answer) -> HttpResponse:
        """An interaction's :class:`~fhir_api.interactions.Answer` as the HTTP response."""
        headers = version_headers(answer.version_id, answer.last_updated)
        if answer.location:
            headers["Location"] = answer.location
        if answer.text is not None:
            return self.json_response(answer.text, headers, answer.status)
        return Response(answer.body, status=answer.status, headers=headers)


def version_headers(version_id: int | None, last_updated: Any) -> dict[str, str]:
    """``ETag`` and ``Last-Modified`` of one version of a resource (each only if known)."""
    headers: dict[str, str] = {}
    if version_id is not None:
        headers["ETag"] = f'W/"{version_id}"'
    if last_updated is not None:
        headers["Last-Modified"] = http_date(last_updated.timestamp())
    return headers


def _headers(request: Request) -> dict[str, str]:
    """The conditional request headers, as :mod:`fhir_api.interactions` reads them."""
    return {name: request.META[key] for name, key in HEADERS if key in request.META}


def _params(request: Request) -> Params:
    return list(request.query_params.lists())


class TypeView(FhirView):
    """``GET /<Type>`` search, ``POST /<Type>`` create, ``PUT``/``DELETE /<Type>?<search>``
    conditional update and delete."""

    interactions = {"GET": "search", "POST": "create", "PUT": "update", "DELETE": "delete"}

    def get(self, request: Request, resource_type: str) -> HttpResponse:
        return self.respond(rest.search(self.repository(), resource_type, _params(request)))

    def post(self, request: Request, resource_type: str) -> HttpResponse:
        return self.respond(rest.create(self.repository(), resource_type, body(request), _headers(request)))

    def put(self, request: Request, resource_type: str) -> HttpResponse:
        return self.respond(rest.conditional_update(self.repository(), resource_type, _params(request),
                                                            body(request), _headers(request)))

    def delete(self, request: Request, resource_type: str) -> HttpResponse:
        return self.respond(rest.conditional_delete(self.repository(), resource_type, _params(request)))


class InstanceView(FhirView):
    """``GET``/``PUT``/``PATCH``/``DELETE /<Type>/<id>``."""

    interactions = {"GET": "read", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
    parser_classes = [FhirJSONParser, JSONParser, JSONPatchParser]

    def get(self, request: Request, resource_type: str, resource_id: str) -> HttpResponse:
        return self.respond(rest.read(self.repository(), resource_type, resource_id, _headers(request)))

    def put(self, request: Request, resource_type: str, resource_id: str) -> HttpResponse:
        return self.respond(rest.update(self.repository(), resource_type, resource_id, body(request),
                                                _headers(request)))

    def patch(self, request: Request, resource_type: str, resource_id: str) -> HttpResponse:
        """JSON Patch (``application/json-patch+json``); other bodies (FHIRPath Patch) → 415."""
        if request.content_type.split(";")[0].strip().lower() != JSONPatchParser.media_type:
            raise exceptions.UnsupportedMediaType(request.content_type,
                                                  detail="PATCH needs a JSON Patch (application/json-patch+json)")
        return self.respond(rest.patch(self.repository(), resource_type, resource_id, body(request),
                                               _headers(request)))

    def delete(self, request: Request, resource_type: str, resource_id: str) -> HttpResponse:
        return self.respond(rest.delete(self.repository(), resource_type, resource_id, _headers(request)))


class HistoryView(FhirView):
    """``GET /<Type>/<id>/_history``: a history Bundle, newest version first."""

    interactions = {"GET": "history"}

    def get(self, request: Request, resource_type: str, resource_id: str) -> HttpResponse:
        return self.respond(rest.history(self.repository(), resource_type, resource_id, _params(request)))


class VersionView(FhirView):
    """``GET /<Type>/<id>/_history/<vid>`` (vread)."""

    interactions = {"GET": "vread"}

    def get(self, request: Request, resource_type: str, resource_id: str, version_id: str) -> HttpResponse:
        return self.respond(rest.vread(self.repository(), resource_type, resource_id, version_id))


class ValidateView(FhirView):
    """``POST /<Type>/$validate`` and ``POST /<Type>/<id>/$validate``: an OperationOutcome; the
    interaction a ``mode`` names is decided inside (:func:`fhir_api.operations.validate`)."""

    def post(self, request: Request, resource_type: str, resource_id: str | None = None) -> HttpResponse:
        return self.respond(operations.validate(self.repository(), resource_type, resource_id, body(request),
                                                _params(request)))


class EverythingView(FhirView):
    """``GET /Patient/<id>/$everything``: the Patient's compartment, each type as the caller may search it."""

    def get(self, request: Request, resource_id: str) -> HttpResponse:
        return self.respond(operations.everything(self.repository(), resource_id, _params(request)))


class BundleView(FhirView):
    """``POST /fhir/R4``: a batch or transaction Bundle (:mod:`fhir_api.bundles`). Each entry is
    decided as its single request is; the body is bounded by ``FHIR_BUNDLE_MAX_BYTES``."""

    body_limit = "FHIR_BUNDLE_MAX_BYTES"

    def post(self, request: Request) -> HttpResponse:
        return self.respond(bundles.process(self.repository(), body(request)))


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

    # Every method is a 404: OPTIONS (DRF's answered 200 with this view's metadata) and, through
    # http_method_not_allowed, every other one, unknown ones too (TRACE, QUERY were 405s)
    options = get
    http_method_not_allowed = get

    @property
    def default_response_headers(self) -> dict[str, str]:
        """No ``Allow``: there is no resource here to allow methods on (DRF lists every method)."""
        headers = super().default_response_headers
        headers.pop("Allow", None)
        return headers


@csrf_exempt  # public and GET only: any other method is a 405, not the CSRF failure page
@require_GET
def smart_configuration(request: HttpRequest) -> JsonResponse:
    """SMART App Launch 2.2 §2.1: JSON whatever the ``Accept`` header, readable from any origin."""
    response = JsonResponse(capability.smart_configuration())
    response["Access-Control-Allow-Origin"] = "*"
    response["Cache-Control"] = "public, max-age=300"
    return response
