"""Supported resource types, their search parameters, and the index values of a resource.

Driven by data, not per-type code: the search parameters are the FHIR R4 ``SearchParameter``
resources and the Patient compartment is the R4 ``CompartmentDefinition`` (``fhir_api/data``, made
by ``fhir_api/data/generate.py``). Each parameter's FHIRPath expression is compiled once: an
expression that is a plain path (``Observation.code``, ``(Observation.effective as dateTime)``,
``Observation.subject.where(resolve() is Patient)``, unions of these: 97% of R4's) is walked over
the JSON directly, any other is evaluated with ``fhirpathpy`` (compiled and cached). Both are the
same expression's meaning; tests compare the two on the same resources.

Pure code (no models): the same extraction fills ``SearchIndex`` on every write and checks a new
version against access-policy criteria in Python, so that what the database filters and what a
write is checked against can never disagree.

Index values by parameter type (as :func:`index_values` returns them; :func:`index_row` says how
each is stored):

* ``reference``: ``Type/id`` (relative references, or absolute ones under our FHIR base).
* ``token``: ``code`` and ``system|code`` (``|code`` without a system); plain codes and booleans as is.
* ``string``: lower-cased, whitespace-collapsed (searched by prefix); a HumanName or Address: each part.
* ``date``: the start of the value in UTC as ``YYYY-MM-DDTHH:MM:SS`` (periods: their start and end).
* ``uri``: the URI as is.
* ``number``: the decimal as written (``0.50``); stored with its value in ``SearchIndex.number``.
* ``quantity``: ``<number>|<system>|<code>`` (``<number>||<code>`` without a system), and
  ``<number>||<unit>`` when the unit is not the code; stored as ``system|code`` (``|code``,
  ``|unit``) with the number in ``SearchIndex.number``. A ``<number>||<code>`` search matches the
  ``|<code>`` suffix, so one row serves both forms (rows written before, which also held
  ``|code`` beside ``system|code``, still match: ``manage.py medplum_fhir_reindex`` drops them).
* ``composite`` (two components): ``<first>$<second>``, each component's value as above (a
  quantity's or number's number stored in ``SearchIndex.number``).

A parameter whose expression unites other parameters' (R4's Observation ``combo-*``, e.g.
``combo-code`` = ``code`` | ``component-code``; :attr:`SearchParam.union_of`) has values but no
rows: it is searched on the rows of the parameters it unites.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

from medplum_auth.conf import auth_settings

from .fhirpath import split_expression

logger = logging.getLogger(__name__)

MAX_VALUE_LENGTH = 1024  # longer values are not indexed (never truncated: no false matches)
ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")
REFERENCE_RE = re.compile(r"^([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?\Z")
DATA_DIR = Path(__file__).resolve().parent / "data"
# Served by its own module (read-only, from medplum_auth's security events), not the resource store.
SPECIAL_TYPES = frozenset({"AuditEvent"})
PARAM_TYPES = ("reference", "token", "string", "date", "uri", "number", "quantity", "composite")
COMPOSITE_SEPARATOR = "$"
CONTACT_POINT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


@dataclass(frozen=True)
class Component:
    """One part of a composite parameter: its type and its expression relative to the composite's element."""

    name: str
    type: str
    evaluate: Callable[[Any], list[Any]] = field(compare=False, repr=False)


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: str  # one of PARAM_TYPES
    paths: tuple[str, ...]  # the elements the expression reads (for hiddenFields checks)
    target: str | None = None  # reference params: only references to this type
    expression: str = ""
    targets: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()
    evaluate: Callable[[Any], list[Any]] | None = field(default=None, compare=False, repr=False)
    # A union of other parameters of the type (R4's Observation ``combo-*``: ``combo-code`` is
    # ``code | component-code``): its values are exactly theirs, so it is searched on their index
    # rows and has none of its own (query.condition_where).
    union_of: tuple[str, ...] = ()


# --- compiling expressions -------------------------------------------------------------------

_SIMPLE_RE = re.compile(
    r"^(?P<path>[A-Za-z][A-Za-z0-9]*(?:\.[a-z][A-Za-z0-9]*)*)"
    r"(?:\.where\(resolve\(\) is (?P<resolve>[A-Z][A-Za-z]+)\)|\.(?:as|ofType)\((?P<t1>[A-Za-z]+)\)"
    r"| as (?P<t2>[A-Za-z]+))?$")
_PATH_RE = re.compile(r"\b[A-Z][A-Za-z]+((?:\.[a-z][A-Za-z0-9]*\b(?!\())+)")


@cache
def _choice_types() -> dict[str, list[str]]:
    from fhirpathpy.models import models

    return models["r4"]["choiceTypePaths"]


@cache
def _r4_model() -> dict[str, Any]:
    from fhirpathpy.models import models

    return models["r4"]


def _reference_type_filter(resource_type: str) -> Callable[[Any], bool]:
    def accepts(node: Any) -> bool:
        ref = reference_value(node.get("reference")) if isinstance(node, dict) else None
        return ref is not None and ref.startswith(resource_type + "/")
    return accepts


def _compile_simple(alternative: str, root: str) -> Callable[[Any], Iterator[Any]] | None:
    """A walker for a plain path alternative, or ``None`` when it is not one.

    ``root`` is the FHIR path of what the walk starts from (``Observation``, or a composite's
    element, ``Observation.component``): it names the choice elements (``value[x]``) on the way.
    """
    text = alternative
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    match = _SIMPLE_RE.match(text)
    if not match:
        return None
    segments = match.group("path").split(".")
    if segments[0][:1].isupper():
        if segments[0] != root.split(".")[0]:
            return None
        root, segments = segments[0], segments[1:]
    wanted = match.group("t1") or match.group("t2")
    choices = _choice_types()
    steps: list[tuple[str, ...]] = []
    path = root
    for i, segment in enumerate(segments):
        path = f"{path}.{segment}"
        types = choices.get(path)
        if types:
            if wanted and i == len(segments) - 1:
                types = [t for t in types if t.lower() == wanted.lower()]
            steps.append(tuple(segment + t[0].upper() + t[1:] for t in types))
        else:
            steps.append((segment,))
    accepts = _reference_type_filter(match.group("resolve")) if match.group("resolve") else None

    def walk(node: Any) -> Iterator[Any]:
        nodes = node if isinstance(node, list) else [node]
        for keys in steps:
            following: list[Any] = []
            for item in nodes:
                if isinstance(item, dict):
                    for key in keys:
                        child = item.get(key)
                        if isinstance(child, list):
                            following.extend(child)
                        elif child is not None:
                            following.append(child)
            nodes = following
            if not nodes:
                return
        for item in nodes:
            if item is not None and (accepts is None or accepts(item)):
                yield item
    return walk


def _compile_fhirpath(expression: str) -> Callable[[Any], Iterator[Any]]:
    """``fhirpathpy``'s evaluation of ``expression``, parsed on first use; a failure yields nothing."""
    compiled: list[Any] = []

    def evaluate(node: Any) -> Iterator[Any]:
        if not compiled:
            import fhirpathpy

            compiled.append(fhirpathpy.compile(expression, _r4_model()))
        try:
            yield from compiled[0](node)
        except Exception:  # an expression this engine cannot evaluate indexes nothing, never a 500
            logger.warning("FHIRPath expression %r could not be evaluated", expression, exc_info=True)
    return evaluate


def compile_expression(expression: str, root: str) -> Callable[[Any], list[Any]]:
    """The values ``expression`` selects from a node whose FHIR path is ``root``."""
    walkers = []
    for alternative in split_expression(expression):
        walker = _compile_simple(alternative, root)
        if walker is None:  # one non-plain alternative: the whole expression through fhirpathpy
            general = _compile_fhirpath(expression)
            return lambda node: list(general(node))
        walkers.append(walker)
    if len(walkers) == 1:
        only = walkers[0]
        return lambda node: list(only(node))
    return lambda node: [value for walker in walkers for value in walker(node)]


def _single_target(expression: str, targets: tuple[str, ...]) -> str | None:
    if len(targets) == 1:
        return targets[0]
    resolved = {m for m in re.findall(r"where\(resolve\(\) is ([A-Z][A-Za-z]+)\)", expression)}
    alternatives = split_expression(expression)
    if len(resolved) == 1 and all("resolve() is" in a for a in alternatives):
        return resolved.pop()
    return None


def _make_param(resource_type: str, name: str, spec: list[Any]) -> SearchParam | None:
    type_, expression = spec[0], spec[1]
    extra = spec[2] if len(spec) > 2 else []
    paths = tuple(dict.fromkeys(m.group(1)[1:] for m in _PATH_RE.finditer(expression)
                                if m.group(0).startswith(resource_type + ".")))
    if type_ == "composite":
        if len(extra) != 2 or any(kind not in PARAM_TYPES or kind == "composite" for _c, kind, _e in extra):
            return None
        base_path = split_expression(expression)[0].strip("()")
        components = tuple(Component(code, kind, compile_expression(expr, base_path)) for code, kind, expr in extra)
        return SearchParam(name, type_, paths, None, expression, (), components,
                           compile_expression(expression, resource_type))
    targets = tuple(extra) if type_ == "reference" else ()
    target = _single_target(expression, targets) if type_ == "reference" else None
    return SearchParam(name, type_, paths, target, expression, targets, (),
                       compile_expression(expression, resource_type))


def _unions(specs: dict[str, list[Any]]) -> dict[str, tuple[str, ...]]:
    """The parameters whose expression's alternatives are exactly those of other parameters of the
    same kind (and, for composites, the same components) put together: ``{name: (the others…)}``;
    not references, whose targets may differ."""
    def plain(expression: str) -> str:
        text = expression.strip()
        while text.startswith("(") and text.endswith(")"):
            text = text[1:-1].strip()
        return text

    def kind(spec: list[Any]) -> tuple[Any, ...]:
        return spec[0], tuple((t, plain(e)) for _c, t, e in spec[2]) if spec[0] == "composite" else ()

    alternatives = {name: frozenset(plain(a) for a in split_expression(spec[1])) for name, spec in specs.items()}
    unions = {}
    for name, spec in specs.items():
        if spec[0] == "reference" or len(alternatives[name]) < 2:
            continue
        candidates = sorted((other for other, o_spec in specs.items() if other != name and kind(o_spec) == kind(spec)
                             and alternatives[other] < alternatives[name]),
                            key=lambda other: (-len(alternatives[other]), other))
        covered: frozenset[str] = frozenset()
        parts = []
        for other in candidates:
            if not covered & alternatives[other]:
                covered |= alternatives[other]
                parts.append(other)
        if covered == alternatives[name]:
            unions[name] = tuple(parts)
    return unions


def _load() -> tuple[dict[str, dict[str, SearchParam]], dict[str, tuple[str, ...]]]:
    data = json.loads((DATA_DIR / "r4-search-parameters.json").read_text())
    server = json.loads((DATA_DIR / "server-search-parameters.json").read_text())
    extra = server["params"]
    params: dict[str, dict[str, SearchParam]] = {}
    for resource_type in data["types"]:
        if resource_type in SPECIAL_TYPES:
            continue
        specs = {**data["params"].get(resource_type, {}), **extra.get(resource_type, {})}
        made = (_make_param(resource_type, name, spec) for name, spec in specs.items())
        unions = _unions(specs)
        params[resource_type] = {p.name: replace(p, union_of=unions.get(p.name, ())) for p in made if p is not None}
    members = {**json.loads((DATA_DIR / "r4-patient-compartment.json").read_text())["resource"],
               **server["compartment"]}
    return params, {t: tuple(names) for t, names in members.items() if t in params}


SEARCH_PARAMETERS, COMPARTMENT_PARAMS = _load()
RESOURCE_TYPES: tuple[str, ...] = tuple(SEARCH_PARAMETERS)


def values_at(content: dict[str, Any], path: str) -> Iterator[Any]:
    """The values at a dotted element path (through lists), without choice types."""
    nodes: list[Any] = [content]
    for segment in path.split("."):
        following: list[Any] = []
        for node in nodes:
            child = node.get(segment) if isinstance(node, dict) else None
            following.extend(child if isinstance(child, list) else [] if child is None else [child])
        nodes = following
    yield from nodes


def reference_value(reference: str) -> str | None:
    """``Type/id`` for a relative reference, or an absolute one under our FHIR base."""
    if not isinstance(reference, str):
        return None
    base = auth_settings.fhir_base_url + "/"
    if reference.startswith(base):
        reference = reference[len(base):]
    match = REFERENCE_RE.match(reference)
    return f"{match.group(1)}/{match.group(2)}" if match else None


# --- values by parameter type ------------------------------------------------------------------

def _reference_values(node: Any) -> Iterator[str]:
    ref = reference_value(node.get("reference") if isinstance(node, dict) else node)
    if ref:
        yield ref


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
        if isinstance(code, str) and node.get("system") in CONTACT_POINT_SYSTEMS and "code" not in node:
            yield code  # a ContactPoint's system is a kind (phone, email), not a code system
        elif isinstance(code, str):
            yield code
            system = node.get("system")
            yield f"{system}|{code}" if isinstance(system, str) else f"|{code}"


_STRING_PARTS = ("text", "family", "given", "prefix", "suffix",  # HumanName
                 "line", "city", "district", "state", "postalCode", "country")  # Address


def _string_values(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield normalise_string(node)
    elif isinstance(node, dict):
        for part in _STRING_PARTS:
            value = node.get(part)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    yield normalise_string(item)


def normalise_string(value: str) -> str:
    return " ".join(value.split()).lower()


def _uri_values(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node


def format_number(value: Any) -> str | None:
    """A decimal as written (JSON numbers as Python reads them); ``None`` for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, str)):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return str(number) if number.is_finite() and math.isfinite(float(number)) else None


def _number_values(node: Any) -> Iterator[str]:
    text = format_number(node)
    if text is not None:
        yield text


def _quantity_values(node: Any) -> Iterator[str]:
    """Quantity, Age, Duration, Money (currency as code), a Range's ends, SampledData's origin."""
    if not isinstance(node, dict):
        return
    if "value" not in node:
        for part in ("low", "high", "origin"):
            yield from _quantity_values(node.get(part))
        return
    number = format_number(node.get("value"))
    if number is None:
        return
    system, code, unit = node.get("system"), node.get("code", node.get("currency")), node.get("unit")
    if isinstance(node.get("currency"), str) and "code" not in node:
        system = "urn:iso:std:iso:4217"
    # One row per coded value: ``system|code`` (``|code`` without a system); ``value||code``
    # searches match it by its ``|code`` suffix (query._value_match). A unit that is not the code
    # is a second row, ``|unit``.
    forms = []
    if isinstance(code, str):
        forms.append(f"{system}|{code}" if isinstance(system, str) else f"|{code}")
    if isinstance(unit, str) and unit != code:
        forms.append(f"|{unit}")
    for form in forms or ["|"]:
        yield f"{number}|{form}"


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
    """A date, dateTime or instant: its start; a Period: its start and its end's start; a Timing: its events."""
    if isinstance(node, dict):
        for part in ("start", "end"):
            yield from _date_values(node.get(part))
        for event in node.get("event") or []:
            yield from _date_values(event)
        return
    bounds = date_range(node) if isinstance(node, str) else None
    if bounds is not None:
        yield format_date(bounds[0])


_EXTRACTORS: dict[str, Callable[[Any], Iterator[str]]] = {
    "reference": _reference_values, "token": _token_values, "string": _string_values, "date": _date_values,
    "uri": _uri_values, "number": _number_values, "quantity": _quantity_values,
}


def _composite_values(param: SearchParam, content: dict[str, Any]) -> Iterator[str]:
    first, second = param.components
    assert param.evaluate is not None
    for element in param.evaluate(content):
        lefts = [v for node in first.evaluate(element) for v in _EXTRACTORS[first.type](node)]
        rights = [v for node in second.evaluate(element) for v in _EXTRACTORS[second.type](node)]
        for left in lefts:
            for right in rights:
                yield f"{left}{COMPOSITE_SEPARATOR}{right}"


def param_values(param: SearchParam, content: dict[str, Any]) -> list[str]:
    if param.type == "composite":
        out = list(_composite_values(param, content))
    else:
        assert param.evaluate is not None
        extract = _EXTRACTORS[param.type]
        out = [value for node in param.evaluate(content) for value in extract(node)]
    return [v for v in dict.fromkeys(out) if 0 < len(v) <= MAX_VALUE_LENGTH]


def index_values(resource_type: str, content: dict[str, Any]) -> dict[str, list[str]]:
    """Every search parameter's values for ``content`` (parameters without values omitted)."""
    out: dict[str, list[str]] = {}
    for name, param in SEARCH_PARAMETERS.get(resource_type, {}).items():
        values = param_values(param, content)
        if values:
            out[name] = values
    return out


def split_numeric(kind: str, value: str) -> tuple[str, float | None]:
    """What a value of a parameter (or composite component) of type ``kind`` stores: the text that
    ``SearchIndex.value`` holds and the number ``SearchIndex.number`` holds (``None`` if none)."""
    if kind == "number":
        return "", float(value)
    if kind == "quantity":
        number, _, units = value.partition("|")
        return units, float(number)
    return value, None


def index_row(param: SearchParam, value: str) -> tuple[str, float | None]:
    """How one of :func:`index_values`'s values is stored: ``(SearchIndex.value, SearchIndex.number)``."""
    if param.type == "number":
        return value, float(value)
    if param.type == "composite":
        left, _, right = value.partition(COMPOSITE_SEPARATOR)
        text, number = split_numeric(param.components[1].type, right)
        return f"{left}{COMPOSITE_SEPARATOR}{text}", number
    return split_numeric(param.type, value)


def index_rows(resource_type: str, index: dict[str, list[str]]) -> Iterator[tuple[str, str, float | None]]:
    """``(name, value, number)`` of every ``SearchIndex`` row for :func:`index_values`'s result."""
    params = SEARCH_PARAMETERS.get(resource_type, {})
    for name, values in index.items():
        param = params[name]
        if param.union_of:
            continue  # searched on the rows of the parameters it unites
        for value in values:
            text, number = index_row(param, value)
            yield name, text, number


def compartment(resource_type: str, resource_id: str, index: dict[str, list[str]]) -> str:
    """The Patient compartment column: the Patient's own reference, else the patient of the first of
    the type's Patient-compartment parameters (R4 ``CompartmentDefinition/patient``, in its order)
    that refers to anything.

    A subset of FHIR's compartment, stricter, never wider: only the first parameter with a value
    counts (an Observation's ``subject``, not its ``performer``), and if it names several patients,
    or none (a Group), the resource belongs to none (``""``), so no single patient's token reaches it
    through ``_compartment``; nor does a type outside the compartment (Practitioner, Location …).
    """
    if resource_type == "Patient":
        return f"Patient/{resource_id}"
    for name in COMPARTMENT_PARAMS.get(resource_type, ()):
        values = index.get(name)
        if values:
            patients = {value for value in values if value.startswith("Patient/")}
            return patients.pop() if len(patients) == 1 else ""
    return ""
