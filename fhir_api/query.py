"""Search conditions: parsed once, then either a database filter or a Python check.

Both forms come from the same :class:`Condition`, so search parameters, access-policy criteria
and the check of a new version before a write share one meaning. Access-policy filters
(OR of AND-ed ``(param, value)`` pairs, medplum_auth.access) become ``EXISTS`` subqueries on
``SearchIndex`` plus the ``patient``, ``resource_id`` and ``last_updated`` columns (:class:`Where`);
a criterion this server cannot evaluate matches nothing (never everything).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import BooleanField
from django.db.models.expressions import RawSQL

from medplum_auth.access import COMPARTMENT_PARAM

from .models import Resource, SearchIndex
from .search_params import (
    COMPOSITE_SEPARATOR,
    SEARCH_PARAMETERS,
    SearchParam,
    date_range,
    format_date,
    index_row,
    normalise_string,
    reference_value,
)

RESOURCE_TABLE = Resource._meta.db_table
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le")
NUMBER_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MODIFIERS = {"string": {"", "contains", "exact"}, "token": {""}, "reference": {""}, "date": {""},
             "uri": {"", "below"}, "number": {""}, "quantity": {""}, "composite": {""}}


class SearchError(ValueError):
    """A search parameter this server does not support, or a malformed value."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Match:
    """One alternative value: ``op`` is exact | prefix | contains | suffix | date prefix."""

    op: str  # on SearchIndex.value; "any": no condition on it
    value: str = ""
    low: str = ""
    high: str = ""
    guard: str = ""  # the value must also start with this (a composite's first component)
    num_op: str = ""  # on SearchIndex.number (number, quantity): a NUMBER_PREFIXES prefix
    num_low: float = 0.0
    num_high: float = 0.0


@dataclass(frozen=True)
class Condition:
    """``name`` matches any of ``matches`` (comma-separated values are OR-ed, FHIR R4 §3.1.1.4.7)."""

    name: str
    kind: str  # id | compartment | lastUpdated | index
    matches: tuple[Match, ...]


@dataclass(frozen=True)
class Target:
    """What a Python check compares: the values of a resource version about to be stored."""

    resource_id: str
    patient: str
    last_updated: datetime | None
    index: dict[str, list[str]]


def parse_condition(resource_type: str, key: str, raw: str) -> Condition:
    """``key`` (``name`` or ``name:modifier``) and ``raw`` value → :class:`Condition`.

    Raises :class:`SearchError` for unknown parameters, modifiers or malformed values.
    """
    name, _, modifier = key.partition(":")
    values = [v for v in raw.split(",")] if raw else []
    if not values or any(v == "" for v in values):
        raise SearchError(f"Search parameter {key!r} needs a value", key)
    if "\x00" in raw:  # no stored text holds NUL (PostgreSQL text cannot)
        raise SearchError(f"Search parameter {key!r} has a NUL character", key)
    if name == "_id":
        _no_modifier(key, modifier)
        return Condition(name, "id", tuple(Match("exact", v) for v in values))
    if name == COMPARTMENT_PARAM:
        _no_modifier(key, modifier)
        return Condition(name, "compartment", tuple(Match("exact", v) for v in values))
    if name == "_lastUpdated":
        _no_modifier(key, modifier)
        return Condition(name, "lastUpdated", tuple(_date_match(key, v) for v in values))
    param = SEARCH_PARAMETERS.get(resource_type, {}).get(name)
    if param is None:
        raise SearchError(f"Unknown search parameter {name!r} for {resource_type}", key)
    if param.type == "reference":
        if modifier and not (modifier[:1].isupper() and modifier.isalpha()):
            raise SearchError(f"Unsupported modifier {key!r}", key)
        return Condition(name, "index", tuple(_reference_match(param.target or modifier or None, v) for v in values))
    if modifier not in MODIFIERS[param.type]:
        raise SearchError(f"Unsupported modifier {key!r}", key)
    if param.type == "composite":
        return Condition(name, "index", tuple(_composite_match(key, param, v) for v in values))
    return Condition(name, "index", tuple(_value_match(key, param.type, modifier, v) for v in values))


def _value_match(key: str, kind: str, modifier: str, value: str) -> Match:
    """One value of a parameter (or a composite's component) of type ``kind`` other than reference."""
    if kind == "string":
        if modifier == "exact":
            return Match("exact", " ".join(value.split()).lower())
        return Match("contains" if modifier == "contains" else "prefix", normalise_string(value))
    if kind == "token":
        return Match("prefix", value) if value.endswith("|") and len(value) > 1 else Match("exact", value)
    if kind == "uri":
        return Match("prefix" if modifier == "below" else "exact", value)
    if kind == "number":
        return _number_match(key, value, Match("any"))
    if kind == "quantity":
        number, _, units = value.partition("|")
        if "|" not in units:
            units = f"|{units}" if units else ""  # "5.4|mg" is not FHIR's form; read it as "5.4||mg"
        if not units.strip("|"):
            return _number_match(key, number, Match("any"))
        # "||code" (any system) is the suffix of the one row "system|code"; "system|code" is exact.
        return _number_match(key, number, Match("suffix" if units.startswith("|") else "exact", units))
    if kind == "reference":
        return _reference_match(None, value)
    return _date_match(key, value)


def _composite_match(key: str, param: SearchParam, value: str) -> Match:
    """``first$second``: the first component's value exactly, the second's by its type, in one row."""
    left, separator, right = value.partition(COMPOSITE_SEPARATOR)
    first, second = param.components
    if not separator or not left or not right:
        raise SearchError(f"Search parameter {key!r} needs a value like <{first.name}>$<{second.name}>", key)
    guard = f"{left}{COMPOSITE_SEPARATOR}"
    match = _value_match(key, second.type, "", right)
    if second.type == "number":  # stored as "first$" with the number
        return replace(match, op="exact", value=guard, guard=guard)
    if second.type == "quantity":  # stored as "first$system|code" with the number
        return replace(match, value=match.value if match.op == "suffix" else guard + match.value, guard=guard)
    if match.op in DATE_PREFIXES:
        return replace(match, low=guard + match.low, high=guard + match.high, guard=guard)
    return replace(match, value=guard + match.value, guard=guard)


def _number_match(key: str, text: str, units: Match) -> Match:
    """``[prefix]number`` (FHIR R4 §3.1.1.4.2: ``eq`` is the range of the value's precision)."""
    prefix = text[:2] if text[:2] in NUMBER_PREFIXES else "eq"
    number_text = text[2:] if text[:2] in NUMBER_PREFIXES else text
    try:
        number = Decimal(number_text)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite() or not _NUMBER_RE.match(number_text) or not math.isfinite(float(number)):
        raise SearchError(f"Invalid number {text!r} for {key!r}", key)
    half = Decimal(5).scaleb(number.as_tuple().exponent - 1)
    low, high = float(number - half), float(number + half)
    if prefix == "ap":
        margin = abs(number) / 10
        low, high = float(number - margin), float(number + margin)
    elif prefix not in ("eq", "ne"):
        low = high = float(number)
    return replace(units, num_op=prefix, num_low=low, num_high=high)


_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")


@dataclass(frozen=True)
class Include:
    """``_include=<source>:<param>[:<target>]``: the resources ``param`` of each match refers to;
    for ``_revinclude`` the ``source`` resources whose ``param`` refers to a match."""

    source: str
    param: str
    target: str | None = None  # only references to this type

    def accepts(self, reference: str) -> bool:
        return self.target is None or reference.startswith(self.target + "/")


def parse_include(resource_type: str, raw: str) -> Include:
    """An ``_include`` value of a search on ``resource_type``; :class:`SearchError` when unsupported.

    Only the searched type's own reference parameters (no ``*``, no ``:iterate``): an include
    never reaches further than one reference from a match.
    """
    parts = raw.split(":")
    if len(parts) not in (2, 3) or any(not part for part in parts):
        raise SearchError(f"Unsupported _include {raw!r} (use {resource_type}:<reference parameter>)", "_include")
    source, name = parts[0], parts[1]
    if source != resource_type:
        raise SearchError(f"Unsupported _include {raw!r}: only {resource_type}'s own parameters", "_include")
    param = SEARCH_PARAMETERS.get(resource_type, {}).get(name)
    if param is None or param.type != "reference":
        raise SearchError(f"Unsupported _include {raw!r}: {name!r} is not a reference parameter of "
                          f"{resource_type}", "_include")
    target = parts[2] if len(parts) == 3 else param.target
    if target is not None and (target not in SEARCH_PARAMETERS or param.target not in (None, target)):
        raise SearchError(f"Unsupported _include {raw!r}: {target!r} is not a supported target", "_include")
    return Include(source, name, target)


def parse_revinclude(resource_type: str, raw: str) -> Include:
    """A ``_revinclude`` value of a search on ``resource_type``: ``<source>:<param>[:<target>]``,
    the ``source`` resources whose reference parameter ``param`` refers to a match. Only one
    level (no ``*``, no ``:iterate``); ``target``, if given, is ``resource_type``."""
    parts = raw.split(":")
    if len(parts) not in (2, 3) or any(not part for part in parts):
        raise SearchError(f"Unsupported _revinclude {raw!r} (use <Type>:<reference parameter>)", "_revinclude")
    source, name = parts[0], parts[1]
    param = SEARCH_PARAMETERS.get(source, {}).get(name)
    if param is None or param.type != "reference":
        raise SearchError(f"Unsupported _revinclude {raw!r}: {name!r} is not a reference parameter of "
                          f"{source}", "_revinclude")
    if (len(parts) == 3 and parts[2] != resource_type) or param.target not in (None, resource_type):
        raise SearchError(f"Unsupported _revinclude {raw!r}: it does not refer to {resource_type}", "_revinclude")
    return Include(source, name, resource_type)


def _no_modifier(key: str, modifier: str) -> None:
    if modifier:
        raise SearchError(f"Unsupported modifier {key!r}", key)


def _reference_match(target: str | None, value: str) -> Match:
    ref = reference_value(value)
    if ref is not None:
        if target and not ref.startswith(target + "/"):
            return Match("exact", value)  # a reference to another type: never matches
        return Match("exact", ref)
    if "/" not in value:
        return Match("exact", f"{target}/{value}") if target else Match("suffix", f"/{value}")
    return Match("exact", value)


def _date_match(key: str, value: str) -> Match:
    prefix = value[:2] if value[:2] in DATE_PREFIXES else "eq"
    text = value[2:] if value[:2] in DATE_PREFIXES else value
    bounds = date_range(text)
    if bounds is None:
        raise SearchError(f"Invalid date {value!r} for {key!r}", key)
    return Match(prefix, low=format_date(bounds[0]), high=format_date(bounds[1]))


# --- database form ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Where:
    """A boolean SQL expression over ``fhir_api_resource`` rows, and its parameters.

    Written by hand rather than built with ``Q`` objects: Django compiled the policy's and the
    search's ``Exists`` subqueries on every request, which cost more CPU than running them. The
    operators, ``LIKE`` escaping, casts and parameter adaptation are the backend's own
    (``connection.operators``, ``ops.prep_for_like_query``, ``ops.lookup_cast``), so the SQL is
    what the equivalent ``Q`` compiled to. The text depends only on the shape of the conditions
    (values are parameters), so the database's prepared statements are reused.
    """

    sql: str
    params: tuple[Any, ...] = ()

    def expression(self) -> RawSQL:
        """For ``QuerySet.filter()`` on ``Resource``."""
        return RawSQL(self.sql, self.params, output_field=BooleanField())


NOTHING = Where("1 = 0")
EVERYTHING = Where("1 = 1")


def _combine(connector: str, parts: Sequence[Where], empty: Where) -> Where:
    if not parts:
        return empty
    if len(parts) == 1:
        return parts[0]
    return Where(f" {connector} ".join(f"({part.sql})" for part in parts),
                 tuple(p for part in parts for p in part.params))


def all_of(parts: Sequence[Where]) -> Where:
    return _combine("AND", parts, EVERYTHING)


def any_of(parts: Sequence[Where]) -> Where:
    return _combine("OR", parts, NOTHING)


def column(connection: BaseDatabaseWrapper, name: str, table: str = RESOURCE_TABLE) -> str:
    return f"{connection.ops.quote_name(table)}.{connection.ops.quote_name(name)}"


def _lookup(connection: BaseDatabaseWrapper, lookup: str, lhs: str, value: Any) -> Where:
    """``lhs <lookup> value`` as Django writes it for a text column on this backend."""
    if lookup in ("startswith", "contains", "endswith"):
        value = connection.ops.prep_for_like_query(value)
        value = {"startswith": "{}%", "contains": "%{}%", "endswith": "%{}"}[lookup].format(value)
    cast = connection.ops.lookup_cast(lookup, "CharField") % lhs
    return Where(f"{cast} {connection.operators[lookup] % '%s'}", (value,))


def _in(lhs: str, values: Sequence[Any]) -> Where:
    if not values:
        return NOTHING
    return Where(f"{lhs} IN ({', '.join(['%s'] * len(values))})", tuple(values))


def _value_where(connection: BaseDatabaseWrapper, lhs: str, match: Match, adapt: Any = None,
                 number: str = "") -> Where:
    """The match on an index row (``lhs``: its value column, ``number``: its number column)."""
    op = match.op
    parts = []
    if op in ("exact", "prefix", "contains", "suffix"):
        lookup = {"exact": "exact", "prefix": "startswith", "contains": "contains", "suffix": "endswith"}[op]
        parts.append(_lookup(connection, lookup, lhs, match.value))
    elif op != "any":
        parts.append(_date_where(connection, lhs, match, adapt))
    if match.guard:
        parts.append(_lookup(connection, "startswith", lhs, match.guard))
    if match.num_op:
        parts.append(_number_where(number, match))
    return all_of(parts)


def _number_where(lhs: str, match: Match) -> Where:
    low, high = match.num_low, match.num_high
    return {
        "eq": Where(f"{lhs} >= %s AND {lhs} < %s", (low, high)),
        "ap": Where(f"{lhs} >= %s AND {lhs} <= %s", (low, high)),
        "ne": Where(f"({lhs} < %s OR {lhs} >= %s)", (low, high)),
        "gt": Where(f"{lhs} > %s", (low,)), "sa": Where(f"{lhs} > %s", (low,)),
        "lt": Where(f"{lhs} < %s", (low,)), "eb": Where(f"{lhs} < %s", (low,)),
        "ge": Where(f"{lhs} >= %s", (low,)),
        "le": Where(f"{lhs} <= %s", (low,)),
    }[match.num_op]


def _date_where(connection: BaseDatabaseWrapper, lhs: str, match: Match, adapt: Any = None) -> Where:
    low, high = (match.low, match.high) if adapt is None else (adapt(match.low), adapt(match.high))
    return {
        "eq": Where(f"{lhs} >= %s AND {lhs} < %s", (low, high)),
        "ne": Where(f"({lhs} < %s OR {lhs} >= %s)", (low, high)),
        "ge": Where(f"{lhs} >= %s", (low,)),
        "gt": Where(f"{lhs} >= %s", (high,)),
        "le": Where(f"{lhs} < %s", (high,)),
        "lt": Where(f"{lhs} < %s", (low,)),
    }[match.op]


def project_value(connection: BaseDatabaseWrapper, project_id: Any) -> Any:
    """The project's primary key as this backend stores it (a UUID is hex text on SQLite)."""
    return Resource._meta.get_field("project").get_db_prep_value(project_id, connection)


def condition_where(connection: BaseDatabaseWrapper, project_id: Any, resource_type: str,
                    condition: Condition) -> Where:
    """The condition as a filter on ``Resource`` rows of one project and type."""
    if condition.kind == "id":
        return _in(column(connection, "resource_id"), [m.value for m in condition.matches])
    if condition.kind == "compartment":
        return _in(column(connection, "patient"), [m.value for m in condition.matches if m.value])
    if condition.kind == "lastUpdated":
        def adapt(text: str) -> Any:
            return connection.ops.adapt_datetimefield_value(_parse_utc(text))
        return any_of([_date_where(connection, column(connection, "last_updated"), match, adapt)
                       for match in condition.matches])
    index = connection.ops.quote_name(SearchIndex._meta.db_table)
    values = any_of([_value_where(connection, f"{index}.{connection.ops.quote_name('value')}", match,
                                  number=f"{index}.{connection.ops.quote_name('number')}")
                     for match in condition.matches])
    param = SEARCH_PARAMETERS.get(resource_type, {}).get(condition.name)
    names = _in(f"{index}.{connection.ops.quote_name('name')}", (param.union_of if param else ()) or [condition.name])
    sql = (f"EXISTS (SELECT 1 FROM {index} WHERE {index}.{connection.ops.quote_name('resource_id')} = "
           f"{column(connection, 'id')} AND {index}.{connection.ops.quote_name('project_id')} = %s AND "
           f"{index}.{connection.ops.quote_name('resource_type')} = %s AND {names.sql} AND ({values.sql}))")
    return Where(sql, (project_value(connection, project_id), resource_type, *names.params, *values.params))


def _parse_utc(text: str) -> datetime:
    """A :func:`~fhir_api.search_params.format_date` bound back as a UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def criteria_conditions(resource_type: str, criteria: Iterable[tuple[str, str]]) -> list[Condition] | None:
    """Access-policy criteria as conditions; ``None`` when one cannot be evaluated here."""
    conditions = []
    for key, value in criteria:
        try:
            conditions.append(parse_condition(resource_type, key, value))
        except SearchError:
            return None
    return conditions


def filters_where(connection: BaseDatabaseWrapper, project_id: Any, resource_type: str,
                  filters: Sequence[Sequence[tuple[str, str]]]) -> Where:
    """A policy decision's filters (OR of AND-ed criteria); unusable criteria match nothing."""
    alternatives = []
    for criteria in filters:
        conditions = criteria_conditions(resource_type, criteria)
        if conditions is not None:
            alternatives.append(all_of([condition_where(connection, project_id, resource_type, condition)
                                        for condition in conditions]))
    return any_of(alternatives)


# --- Python form -----------------------------------------------------------------------------

def _value_matches(value: str, match: Match, number: float | None = None) -> bool:
    """The Python twin of :func:`_value_where` on one stored row."""
    if match.guard and not value.startswith(match.guard):
        return False
    if match.num_op and (number is None or not _number_matches(number, match)):
        return False
    op = match.op
    if op == "any":
        return True
    if op == "exact":
        return value == match.value
    if op == "prefix":
        return value.startswith(match.value)
    if op == "contains":
        return match.value in value
    if op == "suffix":
        return value.endswith(match.value)
    return {
        "eq": match.low <= value < match.high,
        "ne": value < match.low or value >= match.high,
        "ge": value >= match.low,
        "gt": value >= match.high,
        "le": value < match.high,
        "lt": value < match.low,
    }[op]


def _number_matches(number: float, match: Match) -> bool:
    low, high = match.num_low, match.num_high
    return {
        "eq": low <= number < high, "ap": low <= number <= high, "ne": number < low or number >= high,
        "gt": number > low, "sa": number > low, "lt": number < low, "eb": number < low,
        "ge": number >= low, "le": number <= low,
    }[match.num_op]


def condition_matches(condition: Condition, target: Target, resource_type: str = "") -> bool:
    """Whether ``target`` satisfies ``condition``; ``resource_type`` names its parameters (number,
    quantity and composite values are compared as they are stored)."""
    if condition.kind == "id":
        return any(target.resource_id == m.value for m in condition.matches)
    if condition.kind == "compartment":
        return bool(target.patient) and any(target.patient == m.value for m in condition.matches)
    if condition.kind == "lastUpdated":
        if target.last_updated is None:
            return False
        value = format_date(target.last_updated)
        return any(_value_matches(value, m) for m in condition.matches)
    values = target.index.get(condition.name, [])
    param = SEARCH_PARAMETERS.get(resource_type, {}).get(condition.name)
    rows = [index_row(param, v) for v in values] if param is not None else [(v, None) for v in values]
    return any(_value_matches(text, m, number) for text, number in rows for m in condition.matches)


def filters_match(resource_type: str, filters: Sequence[Sequence[tuple[str, str]]], target: Target) -> bool:
    """Whether a resource version satisfies a policy decision's filters (same rules as :func:`filters_where`)."""
    for criteria in filters:
        conditions = criteria_conditions(resource_type, criteria)
        if conditions is not None and all(condition_matches(c, target, resource_type) for c in conditions):
            return True
    return False
