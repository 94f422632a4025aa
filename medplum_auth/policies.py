"""Access policy documents: validation and normalisation.

A policy is a list of rules in Medplum's ``AccessPolicy.resource[]`` shape::

    {"resourceType": "Observation",            # a FHIR type or "*"
     "criteria": "Observation?subject=%patient",  # optional FHIR search restricting instances
     "interaction": ["read", "search"],        # or the deprecated "readonly": true
     "hiddenFields": ["note"], "readonlyFields": ["status"]}

Parameters ``%patient``, ``%patient.id``, ``%profile``, ``%profile.id`` (and any name given
in a membership's parameters) are substituted per login. This module has no Django model
imports: it is pure, so the FHIR API and the Project Admin preview use the same code.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ValidationError

from . import jsonbody

INTERACTIONS: tuple[str, ...] = ("create", "read", "vread", "update", "delete", "history", "search")
READONLY_INTERACTIONS: tuple[str, ...] = ("read", "vread", "history", "search")
RULE_KEYS = frozenset({"resourceType", "criteria", "interaction", "readonly", "hiddenFields", "readonlyFields"})
# \Z, not $: "$" also matches before a trailing newline, which would let "name\n" through.
RESOURCE_TYPE_RE = re.compile(r"^(\*|[A-Z][A-Za-z]{1,63})\Z")
FIELD_PATH_RE = re.compile(r"^[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)*\Z")
PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(:[A-Za-z-]+)?\Z")
PARAMETER_RE = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)(\.id)?")


def _error(index: int, message: str, code: str) -> ValidationError:
    return ValidationError(f"Rule {index + 1}: {message}", code=code)


def parse_policy_json(text: str | bytes) -> list[dict[str, Any]]:
    """Parse policy JSON (a rule list, or an object with a ``resource`` list) and validate it."""
    try:
        data = jsonbody.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"Access policy is not valid JSON: {exc}", code="invalid_json") from None
    if isinstance(data, dict) and "resource" in data:
        data = data["resource"]
    return validate_rules(data)


def _validate_criteria(index: int, resource_type: str, criteria: Any) -> str:
    if not isinstance(criteria, str) or not criteria.strip():
        raise _error(index, "criteria must be a non-empty string like 'Observation?subject=%patient'.",
                     "invalid_criteria")
    criteria = criteria.strip()
    ctype, sep, query = criteria.partition("?")
    if not sep or not query:
        raise _error(index, f"criteria {criteria!r} must look like 'Type?param=value'.", "invalid_criteria")
    if resource_type != "*" and ctype != resource_type:
        raise _error(index, f"criteria {criteria!r} must start with '{resource_type}?'.", "invalid_criteria")
    if not RESOURCE_TYPE_RE.match(ctype) or ctype == "*":
        raise _error(index, f"criteria {criteria!r} must start with a resource type.", "invalid_criteria")
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        # Before the name check: real _has names (_has:Type:param:param) fail PARAM_NAME_RE.
        if name.startswith("_has"):
            raise _error(index, "criteria must not use _has (Medplum constraint axp-3).", "invalid_criteria")
        if not eq or not value or not PARAM_NAME_RE.match(name):
            raise _error(index, f"criteria parameter {pair!r} must be 'name=value'.", "invalid_criteria")
    if any(ord(char) < 32 for char in criteria):  # never in a search; PostgreSQL cannot store NUL
        raise _error(index, "criteria must not contain control characters.", "invalid_criteria")
    return criteria


def _validate_fields(index: int, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and FIELD_PATH_RE.match(v) for v in value):
        raise _error(index, f"{key} must be a list of element paths like 'name' or 'telecom.value'.",
                     "invalid_fields")
    return list(dict.fromkeys(value))


def validate_rules(rules: Any) -> list[dict[str, Any]]:
    """Return the rules in normal form, or raise ``ValidationError`` listing every problem.

    Normal form: ``readonly`` becomes the explicit read-only interaction list, interactions
    are ordered and de-duplicated, empty optional keys are dropped.
    """
    if not isinstance(rules, list):
        raise ValidationError("Access policy must be a list of rules.", code="invalid_policy")
    errors: list[ValidationError] = []
    normalised: list[dict[str, Any]] = []
    for index, rule in enumerate(rules):
        try:
            normalised.append(_validate_rule(index, rule))
        except ValidationError as exc:
            errors.extend(exc.error_list)
    if errors:
        raise ValidationError(errors)
    return normalised


def _validate_rule(index: int, rule: Any) -> dict[str, Any]:
    if not isinstance(rule, dict):
        raise _error(index, "must be an object.", "invalid_rule")
    unknown = sorted(set(rule) - RULE_KEYS)
    if unknown:
        raise _error(index, f"unknown key(s) {', '.join(unknown)}.", "unknown_key")
    resource_type = rule.get("resourceType")
    if not isinstance(resource_type, str) or not RESOURCE_TYPE_RE.match(resource_type):
        raise _error(index, "resourceType must be a FHIR resource type (e.g. 'Observation') or '*'.",
                     "invalid_resource_type")
    out: dict[str, Any] = {"resourceType": resource_type}
    if rule.get("criteria") is not None:
        out["criteria"] = _validate_criteria(index, resource_type, rule["criteria"])

    readonly = rule.get("readonly")
    interaction = rule.get("interaction")
    if readonly is not None and not isinstance(readonly, bool):
        raise _error(index, "readonly must be true or false.", "invalid_readonly")
    if interaction is not None:
        if readonly:
            raise _error(index, "use either readonly or interaction, not both.", "readonly_conflict")
        if not isinstance(interaction, list) or not interaction:
            raise _error(index, f"interaction must be a non-empty list of {', '.join(INTERACTIONS)}.",
                         "invalid_interaction")
        bad = [i for i in interaction if i not in INTERACTIONS]
        if bad:
            raise _error(index, f"unknown interaction(s) {', '.join(map(str, bad))}; "
                                f"allowed: {', '.join(INTERACTIONS)}.", "unknown_interaction")
        out["interaction"] = [i for i in INTERACTIONS if i in interaction]
    elif readonly:
        out["interaction"] = list(READONLY_INTERACTIONS)
    else:
        out["interaction"] = list(INTERACTIONS)

    for key in ("hiddenFields", "readonlyFields"):
        if rule.get(key):
            out[key] = _validate_fields(index, key, rule[key])
    return out


def substitute_parameters(rules: list[dict[str, Any]], parameters: dict[str, str]) -> list[dict[str, Any]]:
    """Replace ``%name`` / ``%name.id`` in criteria with a login's parameters.

    ``parameters`` maps a name to a reference (``Patient/123``) or a plain string. A rule whose
    criteria names a parameter that is missing is dropped: an unbound rule grants nothing,
    rather than matching everything.
    """
    out: list[dict[str, Any]] = []
    for rule in rules:
        criteria = rule.get("criteria")
        if not criteria:
            out.append(dict(rule))
            continue
        missing = False

        def replace(match: re.Match[str]) -> str:
            nonlocal missing
            value = parameters.get(match.group(1))
            if not value:
                missing = True
                return match.group(0)
            return value.rsplit("/", 1)[-1] if match.group(2) else value

        substituted = PARAMETER_RE.sub(replace, criteria)
        if not missing:
            out.append({**rule, "criteria": substituted})
    return out
