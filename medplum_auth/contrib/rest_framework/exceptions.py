"""FHIR errors for DRF: exceptions that carry an OperationOutcome, and one handler for all errors.

Use the handler globally (``REST_FRAMEWORK = {"EXCEPTION_HANDLER":
"medplum_auth.contrib.rest_framework.exceptions.exception_handler"}``) or per view by returning
it from ``get_exception_handler()``. Each error becomes ``{"resourceType": "OperationOutcome",
"id": …, "issue": [{"severity": "error", "code": …, "details": {"text": …}, "expression": […]}]}``
in Medplum's shape (medplum/medplum: packages/core/src/outcomes.ts).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

from ... import bearer, database

# HTTP status → (OperationOutcome id, issue code, text) for errors raised without their own.
DEFAULT_OUTCOMES: dict[int, tuple[str, str, str]] = {
    400: ("bad-request", "invalid", "Bad request"),
    401: ("unauthorized", "login", "Unauthorized"),
    403: ("forbidden", "forbidden", "Forbidden"),
    404: ("not-found", "not-found", "Not found"),
    405: ("method-not-allowed", "not-supported", "Method not allowed"),
    406: ("not-acceptable", "not-supported", "Not acceptable"),
    409: ("conflict", "conflict", "Conflict"),
    410: ("gone", "deleted", "Gone"),
    412: ("precondition-failed", "conflict", "Precondition failed"),
    413: ("too-large", "too-costly", "Request body too large"),
    415: ("unsupported-media-type", "not-supported", "Unsupported media type"),
    429: ("too-many-requests", "throttled", "Too many requests"),
    503: ("unavailable", "transient", "Service unavailable"),
}


def operation_outcome(code: str, text: str, *, outcome_id: str | None = None, expression: list[str] | None = None,
                      severity: str = "error") -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "details": {"text": text}}
    if expression:
        issue["expression"] = list(expression)
    body: dict[str, Any] = {"resourceType": "OperationOutcome"}
    if outcome_id:
        body["id"] = outcome_id
    body["issue"] = [issue]
    return body


class FhirError(exceptions.APIException):
    """An error with a FHIR issue code and, optionally, the FHIRPath of the failing element."""

    status_code = 400
    issue_code = "invalid"
    outcome_id: str | None = None
    default_detail = "Bad request"

    def __init__(self, detail: str | None = None, *, expression: str | list[str] | None = None,
                 issue_code: str | None = None, status_code: int | None = None):
        super().__init__(detail or self.default_detail)
        self.text = str(detail or self.default_detail)
        if isinstance(expression, str):
            expression = [expression]
        self.expression = expression or None
        if issue_code:
            self.issue_code = issue_code
        if status_code:
            self.status_code = status_code


class InvalidResource(FhirError):
    status_code = 400
    issue_code = "invalid"


class ResourceNotFound(FhirError):
    """404: missing, or outside the access policy (the two must look the same)."""

    status_code = 404
    issue_code = "not-found"
    outcome_id = "not-found"
    default_detail = "Not found"


class Forbidden(FhirError):
    status_code = 403
    issue_code = "forbidden"
    outcome_id = "forbidden"
    default_detail = "Forbidden"


class Gone(FhirError):
    status_code = 410
    issue_code = "deleted"
    outcome_id = "gone"
    default_detail = "Deleted"


class PreconditionFailed(FhirError):
    """412: ``If-Match`` named a version that is no longer current (FHIR R4 §3.1.0.5)."""

    status_code = 412
    issue_code = "conflict"
    outcome_id = "precondition-failed"
    default_detail = "Precondition failed: the resource has a newer version"


class UnprocessablePatch(FhirError):
    """422: a well-formed patch that cannot be applied (a failed ``test``, a missing path; RFC 5789 §2.2)."""

    status_code = 422
    issue_code = "processing"


class DatabaseBusy(FhirError):
    """503 with ``Retry-After``: the database stayed locked; the write was rolled back, retry it."""

    status_code = 503
    issue_code = "transient"
    outcome_id = "unavailable"
    default_detail = database.BUSY_TEXT


class InvalidBearerToken(exceptions.AuthenticationFailed):
    """401 with RFC 6750 §3.1 ``error`` and ``error_description`` in ``WWW-Authenticate``; for a
    DPoP request a ``DPoP`` challenge (RFC 9449 §7.1) and, to retry with, a ``DPoP-Nonce``."""

    def __init__(self, error: str, description: str, scheme: str = "Bearer", nonce: str | None = None):
        super().__init__(description)
        self.bearer_error = error
        self.bearer_description = description
        self.scheme = scheme
        self.nonce = nonce


def _challenge(exc: exceptions.APIException) -> str | None:
    header = getattr(exc, "auth_header", None)
    if header and isinstance(exc, InvalidBearerToken):
        if exc.scheme == "DPoP":
            return bearer.BearerError(exc.bearer_error, exc.bearer_description, "DPoP").challenge("")
        description = exc.bearer_description.replace('"', "'")
        header += f', error="{exc.bearer_error}", error_description="{description}"'
    return header


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF ``EXCEPTION_HANDLER``: any API error as an OperationOutcome with the right status.

    A database that stayed locked or cannot be reached (:func:`medplum_auth.database.is_retryable`)
    is a 503 with ``Retry-After``. Other unexpected exceptions are left to Django (``None``) so that they are
    logged and reported as server errors rather than hidden.
    """
    if database.is_busy(exc):
        exc = DatabaseBusy()
    elif database.is_unavailable(exc):
        database.note_unavailable(context["request"], exc)
        exc = DatabaseBusy(database.UNAVAILABLE_TEXT)
    if isinstance(exc, Http404):
        exc = ResourceNotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = Forbidden()
    if not isinstance(exc, exceptions.APIException):
        return None

    status_code = exc.status_code
    outcome_id, code, default_text = DEFAULT_OUTCOMES.get(status_code, ("error", "processing", "Error"))
    expression: list[str] | None = None
    if isinstance(exc, FhirError):
        code, text, expression = exc.issue_code, exc.text, exc.expression
        outcome_id = exc.outcome_id or (outcome_id if status_code != 400 else None)
    elif isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        # Medplum: 401 {"id": "unauthorized", "issue": [{"code": "login", "details": {"text": "Unauthorized"}}]}
        text = "Unauthorized" if isinstance(exc, exceptions.NotAuthenticated) else f"Unauthorized: {exc.detail}"
        if status_code == status.HTTP_403_FORBIDDEN:  # no authenticator offered a challenge
            outcome_id, code, text = DEFAULT_OUTCOMES[403]
    elif isinstance(exc, exceptions.PermissionDenied):
        text = default_text
    elif isinstance(exc, exceptions.ValidationError):
        text, expression = _validation_text(exc.detail)
    else:
        text = str(exc.detail) if isinstance(exc.detail, str) else default_text

    body = operation_outcome(code, text, outcome_id=outcome_id, expression=expression)
    headers: dict[str, str] = {}
    challenge = _challenge(exc)
    if challenge and status_code == status.HTTP_401_UNAUTHORIZED:
        headers["WWW-Authenticate"] = challenge
        if isinstance(exc, InvalidBearerToken) and exc.nonce:
            headers["DPoP-Nonce"] = exc.nonce
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        headers["Retry-After"] = str(int(exc.wait))
    elif isinstance(exc, DatabaseBusy):
        headers["Retry-After"] = str(database.RETRY_AFTER_SECONDS)
    response = Response(body, status=status_code, headers=headers)
    if status_code in (401, 403):
        response["Cache-Control"] = "no-store"
    return response


def _validation_text(detail: Any) -> tuple[str, list[str] | None]:
    """First message of a DRF ``ValidationError`` and the field it names, if any."""
    if isinstance(detail, dict) and detail:
        name, value = next(iter(detail.items()))
        text, _ = _validation_text(value)
        return text, [str(name)]
    if isinstance(detail, list) and detail:
        return _validation_text(detail[0])
    return str(detail), None
