"""Structural validation of writes with the ``fhir.resources`` R4B models.

An invalid resource raises :class:`~medplum_auth.contrib.rest_framework.exceptions.InvalidResource`
whose ``expression`` is the FHIRPath of the first failing element (``Patient.name[0].family``).
"""

from __future__ import annotations

import re
from functools import cache
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
