"""Batch and transaction Bundles (``POST /fhir/R4``, FHIR R4 http.html#transaction).

Each entry is routed to the function of :mod:`fhir_api.interactions` or :mod:`fhir_api.operations`
that serves the single request it stands for, on the caller's repository: the same access policy,
SMART scopes, validation and versioning. Entries run in the spec's order (DELETE, POST, PUT/PATCH,
GET/HEAD; the response keeps the request's order).

* ``batch``: each entry on its own (in a savepoint); a failing entry answers its status and
  OperationOutcome in its slot, the others are unaffected.
* ``transaction``: one database transaction; the first failing entry rolls back every entry and
  the answer is that entry's status with an OperationOutcome naming ``Bundle.entry[i]``.

References to an entry's ``urn:uuid:`` ``fullUrl`` are rewritten to the resource the entry
creates (ids are chosen before any entry runs; a conditional create's or update's once it has
run: conditional creates run first among the POSTs); an unknown ``urn:uuid:`` is 400. A
conditional reference (``Patient?identifier=…``) is resolved by a search as the caller.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils.http import http_date
from rest_framework.exceptions import MethodNotAllowed

from medplum_auth.conf import auth_settings
from medplum_auth.contrib.rest_framework.exceptions import (
    FhirError,
    InvalidResource,
    PreconditionFailed,
    ResourceNotFound,
    exception_handler,
)

from . import interactions, operations
from .body import TooLarge
from .interactions import Answer, Params, base, params_of
from .repository import Repository, format_instant
from .search_params import SEARCH_PARAMETERS

KINDS = {"batch": "batch-response", "transaction": "transaction-response"}
PHASES = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
URN = "urn:uuid:"
CONDITIONAL_REFERENCE_RE = re.compile(r"^([A-Z][A-Za-z]{0,63})\?(.+)$")
JSON_PATCH = "application/json-patch+json"


# --- routing: one entry to the function its single request runs ----------------------------------

def _type(name: str) -> str:
    if name not in SEARCH_PARAMETERS:
        raise ResourceNotFound(f"Unknown resource type {name}")
    return name


def _patch_document(body: Any) -> Any:
    """A Bundle entry's JSON Patch: a ``Binary`` with ``contentType`` JSON Patch and base64 ``data``
    (FHIR R4 http.html#patch), or the patch array itself."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict) and body.get("resourceType") == "Binary" and body.get("contentType") == JSON_PATCH:
        try:
            return json.loads(base64.b64decode(str(body.get("data", "")), validate=True))
        except (binascii.Error, ValueError):
            raise InvalidResource("The Binary's data must be a base64 JSON Patch document",
                                  expression="Binary.data") from None
    raise InvalidResource(f"A PATCH entry needs a JSON Patch: a Binary of {JSON_PATCH} or the patch array")


def _path(url: str) -> str:
    """An entry's URL relative to the FHIR base (it may be absolute, under the base)."""
    prefix = base() + "/"
    return (url[len(prefix):] if url.startswith(prefix) else url).lstrip("/")


def dispatch(repo: Repository, method: str, url: str, body: Any, headers: dict[str, str], *,
             new_id: uuid.UUID | None = None) -> Answer:
    """Serve ``method url`` (relative to the FHIR base, or absolute under it) as the view would."""
    path, _, query = _path(url).partition("?")
    params: Params = params_of(query)
    parts = path.split("/")
    method = "GET" if method == "HEAD" else method
    resource_type = _type(parts[0]) if parts[0] else None
    routes: dict[tuple[int, str, str], Callable[[], Answer]] = {}
    if resource_type is not None and len(parts) == 1:
        routes = {
            (1, "GET", ""): lambda: interactions.search(repo, resource_type, params),
            (1, "POST", ""): lambda: interactions.create(repo, resource_type, body, headers, new_id=new_id),
            (1, "PUT", ""): lambda: interactions.conditional_update(repo, resource_type, params, body, headers,
                                                                    new_id=new_id),
            (1, "DELETE", ""): lambda: interactions.conditional_delete(repo, resource_type, params),
        }
    elif resource_type is not None and parts[1] == "$validate" and len(parts) == 2:
        routes = {(2, "POST", ""): lambda: operations.validate(repo, resource_type, None, body, params)}
    elif resource_type is not None and len(parts) >= 2:
        resource_id = parts[1]
        routes = {
            (2, "GET", ""): lambda: interactions.read(repo, resource_type, resource_id, headers),
            (2, "PUT", ""): lambda: interactions.update(repo, resource_type, resource_id, body, headers),
            (2, "PATCH", ""): lambda: interactions.patch(repo, resource_type, resource_id, _patch_document(body),
                                                         headers),
            (2, "DELETE", ""): lambda: interactions.delete(repo, resource_type, resource_id, headers),
            (3, "GET", "_history"): lambda: interactions.history(repo, resource_type, resource_id, params),
            (3, "POST", "$validate"): lambda: operations.validate(repo, resource_type, resource_id, body, params),
            (4, "GET", "_history"): lambda: interactions.vread(repo, resource_type, resource_id, parts[3]),
        }
        if resource_type == "Patient":
            routes[(3, "GET", "$everything")] = lambda: operations.everything(repo, resource_id, params)
    shape = (len(parts), method, parts[2] if len(parts) > 2 else "")
    if shape in routes:
        return routes[shape]()
    if any(key[0] == shape[0] and key[2] == shape[2] for key in routes):
        raise MethodNotAllowed(method)
    raise ResourceNotFound(f"No such interaction: {method} {path}")


# --- the Bundle ------------------------------------------------------------------------------

@dataclass
class Entry:
    index: int
    method: str
    url: str
    body: Any
    headers: dict[str, str]
    full_url: str | None
    new_id: uuid.UUID | None = None
    answer: Answer | None = None
    failure: tuple[int, dict[str, Any]] | None = None  # status and OperationOutcome


def _entry(index: int, raw: Any) -> Entry:
    """The parts of ``Bundle.entry[index]``; an unusable entry fails on its own when it runs."""
    request = raw.get("request") if isinstance(raw, dict) else None
    method = request.get("method") if isinstance(request, dict) else None
    url = request.get("url") if isinstance(request, dict) else None
    entry = Entry(index, method if method in PHASES else "", url if isinstance(url, str) else "",
                  raw.get("resource") if isinstance(raw, dict) else None, {},
                  raw.get("fullUrl") if isinstance(raw, dict) and isinstance(raw.get("fullUrl"), str) else None)
    if isinstance(request, dict):
        for field, header in (("ifMatch", "If-Match"), ("ifNoneMatch", "If-None-Match"),
                              ("ifNoneExist", "If-None-Exist"), ("ifModifiedSince", "If-Modified-Since")):
            if isinstance(request.get(field), str):
                entry.headers[header] = request[field]
    return entry


def _conditional(entry: Entry) -> bool:
    return (entry.method == "POST" and "If-None-Exist" in entry.headers) or (
        entry.method == "PUT" and "?" in entry.url)


def _check(entry: Entry) -> None:
    """400 for an entry that names no interaction (raised when it runs, as its own failure)."""
    if not entry.method:
        raise InvalidResource("Bundle.entry.request.method must be GET, HEAD, POST, PUT, PATCH or DELETE",
                              expression=f"Bundle.entry[{entry.index}].request.method")
    if not entry.url:
        raise InvalidResource("Bundle.entry.request.url is required",
                              expression=f"Bundle.entry[{entry.index}].request.url")
    if "If-Modified-Since" in entry.headers:  # a FHIR instant in the Bundle, an HTTP date in HTTP
        try:
            moment = datetime.fromisoformat(entry.headers["If-Modified-Since"].replace("Z", "+00:00"))
            entry.headers["If-Modified-Since"] = http_date(moment.timestamp())
        except ValueError:
            raise InvalidResource("Bundle.entry.request.ifModifiedSince must be a FHIR instant",
                                  expression=f"Bundle.entry[{entry.index}].request.ifModifiedSince") from None


class _References:
    """``urn:uuid:`` fullUrls → ``Type/id``, and conditional references resolved as the caller."""

    def __init__(self, repo: Repository):
        self.repo = repo
        self.urns: dict[str, str] = {}

    def resolve(self, value: str) -> str:
        if value.startswith(URN):
            if value not in self.urns:
                raise InvalidResource(f"Reference {value} is not the fullUrl of an entry of this Bundle that "
                                      "creates a resource")
            return self.urns[value]
        match = CONDITIONAL_REFERENCE_RE.match(value)
        if match is None:
            return value
        resource_type = _type(match.group(1))
        conditions = interactions.criteria(resource_type, params_of(match.group(2)), "Conditional reference")
        found = self.repo.search(resource_type, conditions, count=2).rows
        if len(found) != 1:
            error = PreconditionFailed if found else InvalidResource
            raise error(f"Conditional reference {value} matches {'several resources' if found else 'nothing'}")
        return f"{resource_type}/{found[0].resource_id}"

    def rewrite(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.rewrite(item) for item in node]
        if isinstance(node, dict):
            return {key: self.resolve(value) if key == "reference" and isinstance(value, str)
                    else self.rewrite(value) for key, value in node.items()}
        return node

    def rewrite_url(self, url: str) -> str:
        for urn, reference in self.urns.items():
            if urn in url:
                url = url.replace(urn, reference)
        return url


def _failure(exc: Exception) -> tuple[int, dict[str, Any]]:
    """An entry's error as the single request would answer it (status and OperationOutcome)."""
    response = exception_handler(exc, {})
    if response is None:  # not an API error: a bug, reported as one (500) rather than hidden
        raise exc
    return response.status_code, response.data


def _run(repo: Repository, entry: Entry, references: _References) -> Answer:
    _check(entry)
    body = references.rewrite(entry.body) if entry.body is not None else None
    return dispatch(repo, entry.method, references.rewrite_url(entry.url), body, entry.headers,
                    new_id=entry.new_id)


def process(repo: Repository, bundle: Any) -> Answer:
    """Answer a ``batch`` or ``transaction`` Bundle with its ``-response`` Bundle."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidResource("POST [base] takes a Bundle", expression="Bundle")
    kind = bundle.get("type")
    if not isinstance(kind, str) or kind not in KINDS:  # {} or [] would not even hash
        raise InvalidResource(f"POST [base] takes a batch or transaction Bundle, not {kind!r}",
                              expression="Bundle.type")
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise InvalidResource("Bundle.entry must be a list", expression="Bundle.entry")
    limit = auth_settings.FHIR_BUNDLE_MAX_ENTRIES
    if len(raw_entries) > limit:
        raise TooLarge(f"The Bundle has {len(raw_entries)} entries; this server takes at most {limit} "
                       "(FHIR_BUNDLE_MAX_ENTRIES): split it")
    entries = [_entry(index, raw) for index, raw in enumerate(raw_entries)]
    references = _References(repo)
    for entry in entries:  # the ids of plain creates are chosen first, so references to them resolve
        if entry.method == "POST" and not _conditional(entry) and entry.full_url and entry.full_url.startswith(URN):
            entry.new_id = uuid.uuid4()
            references.urns[entry.full_url] = f"{_path(entry.url).split('/')[0]}/{entry.new_id}"
    order = sorted(entries, key=lambda e: (PHASES.get(e.method, 4), not _conditional(e), e.index))
    if kind == "transaction":
        with transaction.atomic():
            for entry in order:
                try:
                    entry.answer = _run(repo, entry, references)
                except Exception as exc:
                    status, outcome = _failure(exc)
                    issue = outcome["issue"][0]
                    text = f"Transaction failed at Bundle.entry[{entry.index}] ({entry.method} {entry.url}): " \
                           f"{issue['details']['text']}"
                    raise FhirError(text, status_code=status, issue_code=issue["code"],
                                    expression=[f"Bundle.entry[{entry.index}]", *issue.get("expression", [])]
                                    ) from None
                _remember(entry, references)
    else:
        for entry in order:
            try:
                with transaction.atomic():
                    entry.answer = _run(repo, entry, references)
            except Exception as exc:
                entry.failure = _failure(exc)
                continue
            _remember(entry, references)
    head = json.dumps({"resourceType": "Bundle", "type": KINDS[kind]}, separators=(",", ":"))
    return Answer(200, text=f'{head[:-1]},"entry":[{",".join(_response_entry(e) for e in entries)}]}}')


def _remember(entry: Entry, references: _References) -> None:
    """A conditional entry's ``urn:uuid:`` resolves to the resource it created or found."""
    if entry.full_url and entry.full_url.startswith(URN) and entry.answer and entry.answer.reference:
        references.urns.setdefault(entry.full_url, entry.answer.reference)


def _response_entry(entry: Entry) -> str:
    if entry.failure is not None:
        status, outcome = entry.failure
        return json.dumps({"response": {"status": str(status), "outcome": outcome}}, separators=(",", ":"),
                          ensure_ascii=False)
    answer = entry.answer
    assert answer is not None
    response: dict[str, Any] = {"status": str(answer.status)}
    if answer.location:
        response["location"] = answer.location
    if answer.version_id is not None:
        response["etag"] = f'W/"{answer.version_id}"'
    if answer.last_updated is not None:
        response["lastModified"] = format_instant(answer.last_updated)
    text = answer.json_text()
    is_outcome = isinstance(answer.body, dict) and answer.body.get("resourceType") == "OperationOutcome"
    if is_outcome:
        response["outcome"] = answer.body
    head: dict[str, Any] = {}
    if answer.reference and text is not None:
        head["fullUrl"] = f"{base()}/{answer.reference}"
    head["response"] = response
    head_text = json.dumps(head, separators=(",", ":"), ensure_ascii=False)
    if text is None or is_outcome or entry.method == "HEAD":
        return head_text
    return f'{head_text[:-1]},"resource":{text}}}'
