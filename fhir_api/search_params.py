"""Supported resource types, their search parameters, and the index values of a resource.

Pure code (no models): the same extraction fills ``SearchIndex`` on every write and checks a
new version against access-policy criteria in Python, so that what the database filters and
what a write is checked against can never disagree.

Index values by parameter type:

* ``reference``: ``Type/id`` (relative references, or absolute ones under our FHIR base).
* ``token``: ``code`` and ``system|code`` (``|code`` without a system); plain codes and booleans as is.
* ``string``: lower-cased, whitespace-collapsed (searched by prefix).
* ``date``: the start of the value in UTC as ``YYYY-MM-DDTHH:MM:SS`` (periods: their start).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from medplum_auth.conf import auth_settings

MAX_VALUE_LENGTH = 1024  # longer values are not indexed (never truncated: no false matches)
ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")
REFERENCE_RE = re.compile(r"^([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?\Z")


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: str  # reference | token | string | date
    paths: tuple[str, ...]
    target: str | None = None  # reference params: only references to this type


def _p(name: str, type_: str, paths: str, target: str | None = None) -> SearchParam:
    return SearchParam(name, type_, tuple(paths.split("|")), target)


def _subject_params(subject: str = "subject", encounter: str | None = "encounter") -> list[SearchParam]:
    params = [_p("subject", "reference", subject), _p("patient", "reference", subject, "Patient")]
    if encounter:
        params.append(_p("encounter", "reference", encounter))
    return params


_NAME = [_p("name", "string", "name.text|name.family|name.given|name.prefix|name.suffix"),
         _p("family", "string", "name.family"), _p("given", "string", "name.given")]
_IDENTIFIER = _p("identifier", "token", "identifier")

SEARCH_PARAMETERS: dict[str, dict[str, SearchParam]] = {
    resource_type: {p.name: p for p in params}
    for resource_type, params in {
        "Patient": [_IDENTIFIER, *_NAME, _p("birthdate", "date", "birthDate"), _p("gender", "token", "gender"),
                    _p("active", "token", "active"), _p("organization", "reference", "managingOrganization"),
                    _p("general-practitioner", "reference", "generalPractitioner")],
        "Practitioner": [_IDENTIFIER, *_NAME, _p("gender", "token", "gender"), _p("active", "token", "active")],
        "RelatedPerson": [_IDENTIFIER, *_NAME, _p("gender", "token", "gender"), _p("active", "token", "active"),
                          _p("patient", "reference", "patient", "Patient")],
        "Organization": [_IDENTIFIER, _p("name", "string", "name|alias"), _p("active", "token", "active"),
                         _p("type", "token", "type")],
        "Encounter": [_IDENTIFIER, *_subject_params(encounter=None), _p("status", "token", "status"),
                      _p("class", "token", "class"), _p("type", "token", "type"),
                      _p("participant", "reference", "participant.individual"),
                      _p("service-provider", "reference", "serviceProvider"),
                      _p("date", "date", "period.start|period.end")],
        "Observation": [_IDENTIFIER, *_subject_params(), _p("status", "token", "status"),
                        _p("code", "token", "code"), _p("category", "token", "category"),
                        _p("performer", "reference", "performer"),
                        _p("date", "date", "effectiveDateTime|effectivePeriod.start|effectivePeriod.end|"
                                           "effectiveInstant")],
        "Condition": [_IDENTIFIER, *_subject_params(), _p("code", "token", "code"),
                      _p("category", "token", "category"), _p("clinical-status", "token", "clinicalStatus"),
                      _p("verification-status", "token", "verificationStatus"),
                      _p("onset-date", "date", "onsetDateTime|onsetPeriod.start|onsetPeriod.end"),
                      _p("recorded-date", "date", "recordedDate"),
                      _p("asserter", "reference", "asserter")],
        "AllergyIntolerance": [_IDENTIFIER, _p("patient", "reference", "patient", "Patient"),
                               _p("encounter", "reference", "encounter"), _p("code", "token", "code"),
                               _p("category", "token", "category"),
                               _p("clinical-status", "token", "clinicalStatus"),
                               _p("verification-status", "token", "verificationStatus"),
                               _p("date", "date", "recordedDate"), _p("recorder", "reference", "recorder"),
                               _p("asserter", "reference", "asserter")],
        "MedicationRequest": [_IDENTIFIER, *_subject_params(), _p("status", "token", "status"),
                              _p("intent", "token", "intent"), _p("category", "token", "category"),
                              _p("code", "token", "medicationCodeableConcept"),
                              _p("medication", "reference", "medicationReference"),
                              _p("requester", "reference", "requester"),
                              _p("authoredon", "date", "authoredOn")],
        "Immunization": [_IDENTIFIER, _p("patient", "reference", "patient", "Patient"),
                         _p("encounter", "reference", "encounter"), _p("status", "token", "status"),
                         _p("vaccine-code", "token", "vaccineCode"), _p("performer", "reference", "performer.actor"),
                         _p("date", "date", "occurrenceDateTime")],
        "Procedure": [_IDENTIFIER, *_subject_params(), _p("status", "token", "status"),
                      _p("code", "token", "code"), _p("category", "token", "category"),
                      _p("performer", "reference", "performer.actor"),
                      _p("date", "date", "performedDateTime|performedPeriod.start|performedPeriod.end")],
        "DiagnosticReport": [_IDENTIFIER, *_subject_params(), _p("status", "token", "status"),
                             _p("code", "token", "code"), _p("category", "token", "category"),
                             _p("performer", "reference", "performer"),
                             _p("date", "date", "effectiveDateTime|effectivePeriod.start|effectivePeriod.end")],
        "DocumentReference": [_IDENTIFIER, *_subject_params(encounter="context.encounter"),
                              _p("status", "token", "status"), _p("type", "token", "type"),
                              _p("category", "token", "category"), _p("author", "reference", "author"),
                              _p("date", "date", "date")],
        "CarePlan": [_IDENTIFIER, *_subject_params(), _p("status", "token", "status"),
                     _p("intent", "token", "intent"), _p("category", "token", "category"),
                     _p("date", "date", "period.start|period.end")],
    }.items()
}
RESOURCE_TYPES: tuple[str, ...] = tuple(SEARCH_PARAMETERS)

def _walk(node: Any, segments: list[str]) -> Iterator[Any]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, segments)
        return
    if not segments:
        if node is not None:
            yield node
        return
    if isinstance(node, dict):
        yield from _walk(node.get(segments[0]), segments[1:])


def values_at(content: dict[str, Any], path: str) -> Iterator[Any]:
    yield from _walk(content, path.split("."))


def reference_value(reference: str) -> str | None:
    """``Type/id`` for a relative reference, or an absolute one under our FHIR base."""
    if not isinstance(reference, str):
        return None
    base = auth_settings.fhir_base_url + "/"
    if reference.startswith(base):
        reference = reference[len(base):]
    match = REFERENCE_RE.match(reference)
    return f"{match.group(1)}/{match.group(2)}" if match else None


def _token_values(node: Any) -> Iterator[str]:
    if isinstance(node, bool):
        yield "true" if node else "false"
    elif isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        if "coding" in node:  # CodeableConcept
            for coding in node.get("coding") or []:
                yield from _token_values(coding)
        code = node.get("code", node.get("value"))  # Coding / Identifier / ContactPoint
        if isinstance(code, str):
            yield code
            system = node.get("system")
            yield f"{system}|{code}" if isinstance(system, str) else f"|{code}"


def _string_values(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield normalise_string(node)


def normalise_string(value: str) -> str:
    return " ".join(value.split()).lower()


# --- dates ---------------------------------------------------------------------------------

_DATE_RE = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?\Z"
)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _end(compute: Callable[[], datetime]) -> datetime:
    """The end of a range that starts in the last unit of time (year 9999): the end of time."""
    try:
        return compute()
    except (ValueError, OverflowError):
        return _LATEST


def date_range(value: str) -> tuple[datetime, datetime] | None:
    """``[start, end)`` in UTC of a FHIR date/dateTime/instant at its precision; ``None`` if invalid.

    Times without a zone are read as UTC.
    """
    match = _DATE_RE.match(value.strip()) if isinstance(value, str) else None
    if not match:
        return None
    parts = match.groupdict()
    try:
        year = int(parts["year"])
        if parts["month"] is None:
            start = datetime(year, 1, 1, tzinfo=UTC)
            return start, _end(lambda: start.replace(year=start.year + 1))
        month = int(parts["month"])
        if parts["day"] is None:
            start = datetime(year, month, 1, tzinfo=UTC)
            return start, _end(lambda: start.replace(year=start.year + month // 12, month=month % 12 + 1))
        day = date(year, month, int(parts["day"]))
        if parts["hour"] is None:
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start, _end(lambda: start + timedelta(days=1))
        tz = UTC
        if parts["tz"] and parts["tz"] != "Z":
            sign = 1 if parts["tz"][0] == "+" else -1
            hours, minutes = parts["tz"][1:].split(":")
            tz = dt_timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))
        second = parts["second"]
        local = datetime(day.year, day.month, day.day, int(parts["hour"]), int(parts["minute"]),
                         int(second or 0), tzinfo=tz)
        start = local.astimezone(UTC)
        step = timedelta(seconds=1) if second is not None else timedelta(minutes=1)
        return start, _end(lambda: start + step)
    except (ValueError, OverflowError):  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
        return None


def format_date(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` in UTC, years zero-padded (``strftime`` writes year 1 as ``1``), so
    that index values compare as the moments do."""
    if moment >= _LATEST:  # the open end of the last second: after every stored (second-precision) value
        return "9999-12-31T23:59:59.999999"
    return moment.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat()


def _date_values(node: Any) -> Iterator[str]:
    bounds = date_range(node) if isinstance(node, str) else None
    if bounds is not None:
        yield format_date(bounds[0])


_EXTRACTORS = {"token": _token_values, "string": _string_values, "date": _date_values}


def param_values(param: SearchParam, content: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for path in param.paths:
        for node in values_at(content, path):
            if param.type == "reference":
                ref = reference_value(node.get("reference")) if isinstance(node, dict) else None
                if ref and (param.target is None or ref.startswith(param.target + "/")):
                    out.append(ref)
            else:
                out.extend(_EXTRACTORS[param.type](node))
    return [v for v in dict.fromkeys(out) if 0 < len(v) <= MAX_VALUE_LENGTH]


def index_values(resource_type: str, content: dict[str, Any]) -> dict[str, list[str]]:
    """Every search parameter's values for ``content`` (parameters without values omitted)."""
    out: dict[str, list[str]] = {}
    for name, param in SEARCH_PARAMETERS.get(resource_type, {}).items():
        values = param_values(param, content)
        if values:
            out[name] = values
    return out


def compartment(resource_type: str, resource_id: str, index: dict[str, list[str]]) -> str:
    """The Patient compartment column: the Patient's own reference, else its ``patient`` param.

    Only the ``patient`` parameter (subject/patient elements) counts, a subset of FHIR's
    compartment definition: stricter, never wider. A resource naming several patients there
    belongs to none (``""``), so no single patient's token reaches it through ``_compartment``.
    """
    if resource_type == "Patient":
        return f"Patient/{resource_id}"
    patients = index.get("patient", [])
    return patients[0] if len(patients) == 1 else ""
