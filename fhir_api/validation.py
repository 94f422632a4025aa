"""Validation of writes: structure with the ``fhir.resources`` R4B models, then the codes of
required bindings, which those models do not check (``Observation.status: "not-a-status"``),
from the R4 definitions (``data/r4-required-codes.json``).

An invalid resource raises :class:`~medplum_auth.contrib.rest_framework.exceptions.InvalidResource`
whose ``expression`` is the FHIRPath of the first failing element (``Patient.name[0].family``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from medplum_auth.contrib.rest_framework.exceptions import InvalidResource

_CHOICE_RE = re.compile(r"\['([a-z][A-Za-z]*?)[A-Z]")


@cache
def _model(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


def _expression(resource_type: str, error: dict[str, Any]) -> str:
    path = resource_type
    for part in error.get("loc", ()):
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "resource_type":
            path += ".resourceType"
        elif isinstance(part, str) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*\Z", part):
            path += f".{part.removesuffix('__ext') if part.endswith('__ext') else part}"
    if path == resource_type:
        # Model-level rules (one value[x], etc.) carry no location; name the choice element.
        choice = _CHOICE_RE.search(str(error.get("msg", "")))
        if choice:
            path += f".{choice.group(1)}[x]"
    return path


_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _json_problem(node: Any, path: str) -> tuple[str, str] | None:
    """``(path, what is wrong)`` of the first value JSON-level FHIR rules refuse, before the models:

    * a property whose value is ``null`` (FHIR JSON §2.6.2: only array items may be null, to align
      primitive values with their ``_element`` extensions);
    * a string, or a property name, with a control character other than tab, CR and LF (FHIR
      ``string``: ``[ \\r\\n\\t\\S]+``; PostgreSQL cannot store NUL at all).
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and _CONTROL_RE.search(key):
                return path, "a property name has a control character"
            if value is None:
                return f"{path}.{key}", "null is not a value (leave the element out)"
            found = _json_problem(value, f"{path}.{key}")
            if found:
                return found
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found = _json_problem(item, f"{path}[{index}]")
            if found:
                return found
    elif isinstance(node, str) and _CONTROL_RE.search(node):
        return path, "control characters other than tab, CR and LF are not allowed"
    return None


@cache
def _required_codes() -> dict[str, dict[str, dict[str, Any]]]:
    path = Path(__file__).resolve().parent / "data" / "r4-required-codes.json"
    definitions = json.loads(path.read_text())["definitions"]
    return {name: {"codes": {e: frozenset(c) for e, c in entry["codes"].items()}, "listed": entry["codes"],
                   "refs": entry["refs"]} for name, entry in definitions.items()}


def _items(value: Any, path: str) -> Iterator[tuple[Any, str]]:
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield item, f"{path}[{index}]"
    elif value is not None:
        yield value, path


def _binding_problem(node: Any, definition: str, path: str) -> tuple[str, str] | None:
    """``(path, message)`` of the first code outside its required binding, in document order."""
    entry = _required_codes().get(definition)
    if entry is None or not isinstance(node, dict):
        return None
    for element, value in node.items():
        codes = entry["codes"].get(element)
        if codes is not None:
            for item, where in _items(value, f"{path}.{element}"):
                if isinstance(item, str) and item not in codes:
                    listed = entry["listed"][element]
                    allowed = ", ".join(listed[:12]) + (", …" if len(listed) > 12 else "")
                    return where, f'"{item}" is not a code of its required value set ({allowed})'
        target = entry["refs"].get(element)
        if target is not None:
            for item, where in _items(value, f"{path}.{element}"):
                kind = item.get("resourceType") if target == "*" and isinstance(item, dict) else target
                found = _binding_problem(item, str(kind), where)
                if found:
                    return found
    return None


def validate_resource(resource_type: str, content: dict[str, Any]) -> None:
    """Raise ``InvalidResource`` (400) unless ``content`` is a valid R4B ``resource_type``."""
    from pydantic import ValidationError

    problem = _json_problem(content, resource_type)
    if problem:
        path, message = problem
        raise InvalidResource(f"Invalid {path}: {message}", expression=path)
    try:
        _model(resource_type).model_validate(content)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0] if errors else {}
        expression = _expression(resource_type, first)
        message = str(first.get("msg", "Invalid resource")).removeprefix("Value error, ")
        raise InvalidResource(f"Invalid {expression}: {message}", expression=expression) from None
    except (TypeError, ValueError) as exc:  # malformed input the models reject outright
        raise InvalidResource(f"Invalid {resource_type}: {exc}", expression=resource_type) from None
    problem = _binding_problem(content, resource_type, resource_type)
    if problem:
        path, message = problem
        raise InvalidResource(f"Invalid {path}: {message}", expression=path)
