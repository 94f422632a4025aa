"""One function per FHIR REST interaction, called by the views and by batch/transaction entries.

A view and a Bundle entry that stand for the same request run the same function here with the
same parts (type, id, query, body, conditional headers), so both go through the same repository
call: access policy and SMART scopes (:meth:`Repository.decide` and its filters), validation,
versioning. Each function answers an :class:`Answer` or raises a
:class:`~medplum_auth.contrib.rest_framework.exceptions.FhirError` (an OperationOutcome).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from django.utils.http import parse_http_date_safe

from medplum_auth.conf import auth_settings
from medplum_auth.contrib.rest_framework.exceptions import (
    InvalidResource,
    PreconditionFailed,
    operation_outcome,
)

from .query import Condition, Include, SearchError, parse_condition, parse_include, parse_revinclude
from .repository import MAX_REVINCLUDES, Found, Repository, format_instant

DEFAULT_COUNT = 20
MAX_COUNT = 100
MAX_OFFSET = 10_000  # deeper pages: narrow the search (an offset scans every row before it)
IGNORED_PARAMS = {"_format", "_pretty", "_total"}
IF_MATCH_RE = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')
ALL_OK = operation_outcome("informational", "All OK", outcome_id="allok", severity="information")

#: Query parameters as a view or a Bundle entry's URL gives them: each name with all its values.
Params = Sequence[tuple[str, Sequence[str]]]


@dataclass
class Answer:
    """What an interaction answers: a status, a body (JSON data, or JSON text already produced)
    and the version it concerns (``ETag``/``Last-Modified``/``Location`` in HTTP; ``etag``,
    ``lastModified`` and ``location`` in a Bundle entry's ``response``)."""

    status: int
    body: Any = None
    text: str | None = None
    version_id: int | None = None
    last_updated: datetime | None = None
    location: str | None = None
    reference: str | None = None  # "Type/id" of the resource written or read

    def json_text(self) -> str | None:
        if self.text is not None:
            return self.text
        if self.body is None:
            return None
        return json.dumps(self.body, separators=(",", ":"), ensure_ascii=False)


def base() -> str:
    return auth_settings.fhir_base_url


def params_of(query: str) -> list[tuple[str, list[str]]]:
    """A query string as :data:`Params` (names in first-seen order, values in order)."""
    grouped: dict[str, list[str]] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        grouped.setdefault(key, []).append(value)
    return list(grouped.items())


def _versioned(status: int, repo: Repository, resource_type: str, row: Any, *, text: str | None = None,
               location: bool = False) -> Answer:
    """An answer carrying one version of a resource (a stored row or a read :class:`Found`)."""
    body = None if text is not None else repo.present(resource_type, row.content)
    reference = f"{resource_type}/{row.resource_id}"
    return Answer(status, body=body, text=text, version_id=row.version_id, last_updated=row.last_updated,
                  reference=reference,
                  location=f"{base()}/{reference}/_history/{row.version_id}" if location else None)


# --- parameters ------------------------------------------------------------------------------

def int_param(name: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise InvalidResource(f"{name} must be an integer of at least {minimum}", expression=name)
    return number


def if_match(headers: Mapping[str, str]) -> int | None:
    """The version ``If-Match`` names (``None`` without one, or for ``*``: any current version)."""
    header = headers.get("If-Match")
    if header is None or header.strip() == "*":  # RFC 9110 §13.1.1: "*" matches any current version
        return None
    match = IF_MATCH_RE.match(header)
    if match is None:
        raise PreconditionFailed("If-Match must be a version ETag like W/\"1\"")
    return int(match.group(1))


def criteria(resource_type: str, params: Params, what: str) -> list[Condition]:
    """Search criteria deciding a conditional interaction; 400 when there are none or unusable ones."""
    pairs = [(key, value) for key, values in params for value in values]
    if not pairs:
        raise InvalidResource(f"{what} needs search criteria", expression=what)
    try:
        return [parse_condition(resource_type, key, value) for key, value in pairs]
    except SearchError as exc:
        raise InvalidResource(f"{what}: {exc}", expression=what) from None


def header_criteria(resource_type: str, query: str, header: str) -> list[Condition]:
    """Search criteria from a header holding a query string (``If-None-Exist``); 400 when unusable."""
    query = query.strip().lstrip("?")
    if "?" in query:  # also accept "Patient?identifier=…", the form some clients send
        named, _, query = query.partition("?")
        if named != resource_type:
            raise InvalidResource(f"{header} must search {resource_type}", expression=header)
    return criteria(resource_type, params_of(query), header)


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
            self.count = min(int_param(key, value, 0), MAX_COUNT)
        elif key == "_offset":
            self._offset = int_param(key, value, 0)
        elif key == "_page":
            self._page = int_param(key, value, 1)
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


def entry_text(repo: Repository, found: Found, mode: str) -> str:
    """A searchset entry as JSON text, around the resource's stored text."""
    url = json.dumps(f"{base()}/{found.resource_type}/{found.resource_id}", ensure_ascii=False)
    return f'{{"fullUrl":{url},"resource":{repo.present_json(found)},"search":{{"mode":"{mode}"}}}}'


def searchset(head: dict[str, Any], entries: list[str]) -> str:
    """A Bundle's JSON text: ``head``'s members, then the entries (JSON texts) spliced in."""
    text = json.dumps(head, separators=(",", ":"), ensure_ascii=False)
    return f'{text[:-1]},"entry":[{",".join(entries)}]}}'


# --- interactions ----------------------------------------------------------------------------

def search(repo: Repository, resource_type: str, params: Params) -> Answer:
    """``GET [type]?…``: a searchset Bundle (matches, then ``_include``/``_revinclude``)."""
    conditions: list[Condition] = []
    includes: list[Include] = []
    revincludes: list[Include] = []
    kept: list[tuple[str, str]] = []
    paging, sort, summary = Paging(), None, None
    for key, values in params:
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
    result = repo.search(resource_type, conditions, sort=sort, offset=offset, count=count, total_only=total_only)

    links = paging.links(f"{base()}/{resource_type}", kept, offset, more=offset + count < result.total,
                         total_only=total_only)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": result.total, "link": links}
    if total_only:
        return Answer(200, body=bundle)
    # Included resources: after the matches, not counted in ``total`` (FHIR R4 search, _include).
    included = repo.include(resource_type, result.rows, includes)
    revincluded, truncated = [], False
    if revincludes:
        seen = {(row.resource_type, row.resource_id) for row in [*result.rows, *included]}
        revincluded, truncated = repo.revinclude(resource_type, result.rows, revincludes, seen)
    entries = [entry_text(repo, row, "match") for row in result.rows]
    entries += [entry_text(repo, row, "include") for row in [*included, *revincluded]]
    if truncated:
        warning = operation_outcome("informational", f"Only the first {MAX_REVINCLUDES} _revinclude resources "
                                    "are included; narrow the search or page through it", severity="warning")
        entries.append(json.dumps({"resource": warning, "search": {"mode": "outcome"}}, separators=(",", ":")))
    return Answer(200, text=searchset(bundle, entries))


def create(repo: Repository, resource_type: str, body: Any, headers: Mapping[str, str], *,
           new_id: uuid.UUID | None = None) -> Answer:
    """``POST [type]``; with ``If-None-Exist: <search>`` a conditional create (FHIR R4 §3.1.0.8.1):
    200 with the one match, 201 when none, 412 when several."""
    condition = headers.get("If-None-Exist")
    if condition is None:
        row = repo.create(resource_type, body, new_id=new_id)
    else:
        row = repo.create_if_none_exist(resource_type, body, header_criteria(resource_type, condition,
                                                                             "If-None-Exist"), new_id=new_id)
    if isinstance(row, Found):  # it exists already
        return _versioned(200, repo, resource_type, row, text=repo.present_json(row), location=True)
    return _versioned(201, repo, resource_type, row, location=True)


def read(repo: Repository, resource_type: str, resource_id: str, headers: Mapping[str, str]) -> Answer:
    """``GET [type]/[id]``; 304 without a body when ``If-None-Match`` names the current version or
    ``If-Modified-Since`` is not before it (RFC 9110 §13.1.2: If-None-Match decides when both)."""
    found = repo.read(resource_type, resource_id)
    none_match, modified_since = headers.get("If-None-Match"), headers.get("If-Modified-Since")
    if none_match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in none_match.split(",")}
        if "*" in tags or f'"{found.version_id}"' in tags:
            return Answer(304, version_id=found.version_id, last_updated=found.last_updated)
    elif modified_since is not None:
        since = parse_http_date_safe(modified_since)
        if since is not None and found.last_updated is not None and int(found.last_updated.timestamp()) <= since:
            return Answer(304, version_id=found.version_id, last_updated=found.last_updated)
    return _versioned(200, repo, resource_type, found, text=repo.present_json(found))


def update(repo: Repository, resource_type: str, resource_id: str, body: Any, headers: Mapping[str, str]) -> Answer:
    """``PUT [type]/[id]`` (``If-Match``: 412 unless it names the current version)."""
    row = repo.update(resource_type, resource_id, body, if_match=if_match(headers))
    return _versioned(200, repo, resource_type, row)


def conditional_update(repo: Repository, resource_type: str, params: Params, body: Any,
                       headers: Mapping[str, str], *, new_id: uuid.UUID | None = None) -> Answer:
    """``PUT [type]?search`` (FHIR R4 §3.1.0.4.3): 201 created when nothing matches, 200 updated
    when one resource does, 412 when several; the search sees only what the caller may search."""
    row, created = repo.update_conditional(resource_type, body, criteria(resource_type, params, "Conditional update"),
                                           if_match=if_match(headers), new_id=new_id)
    return _versioned(201 if created else 200, repo, resource_type, row, location=created)


def patch(repo: Repository, resource_type: str, resource_id: str, body: Any, headers: Mapping[str, str]) -> Answer:
    """``PATCH [type]/[id]`` with a JSON Patch document."""
    row = repo.patch(resource_type, resource_id, body, if_match=if_match(headers))
    return _versioned(200, repo, resource_type, row)


def delete(repo: Repository, resource_type: str, resource_id: str, headers: Mapping[str, str]) -> Answer:
    repo.delete(resource_type, resource_id, if_match=if_match(headers))
    return Answer(200, body=ALL_OK)


def conditional_delete(repo: Repository, resource_type: str, params: Params) -> Answer:
    """``DELETE [type]?search``: the one match deleted; nothing matching is All OK; several are 412."""
    repo.delete_conditional(resource_type, criteria(resource_type, params, "Conditional delete"))
    return Answer(200, body=ALL_OK)


def history(repo: Repository, resource_type: str, resource_id: str, params: Params) -> Answer:
    """``GET [type]/[id]/_history``: a history Bundle, newest version first."""
    count, offset = MAX_COUNT, 0
    for key, values in params:
        if key == "_count":
            count = min(int_param(key, values[-1], 0), MAX_COUNT)
        elif key == "_offset":
            offset = int_param(key, values[-1], 0)
        elif key not in IGNORED_PARAMS:
            raise InvalidResource(f"Unsupported parameter {key!r} for _history", expression=key)
    versions = repo.history(resource_type, resource_id)
    url = f"{base()}/{resource_type}/{resource_id}"
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
    return Answer(200, body={"resourceType": "Bundle", "type": "history", "total": len(versions), "link": links,
                             "entry": entries})


def vread(repo: Repository, resource_type: str, resource_id: str, version_id: str) -> Answer:
    """``GET [type]/[id]/_history/[vid]``."""
    version = repo.vread(resource_type, resource_id, version_id)
    return Answer(200, body=repo.present(resource_type, version.content), version_id=version.version_id,
                  last_updated=version.last_updated)
