"""JSON from outside (request bodies, token headers): bounded nesting, never a ``RecursionError``.

``json.loads`` recurses once per ``[`` or ``{``: a few thousand of them exhaust the interpreter's
stack and raise ``RecursionError``, which no ``except ValueError`` catches (a 500 on every body
parser). :func:`loads` turns that, and any document nested deeper than :data:`MAX_DEPTH`, into
:class:`JSONError`, a ``ValueError``, so each caller's "bad body" answer covers it. Pure: no
settings, no models.
"""

from __future__ import annotations

import json
from typing import Any

#: Deepest nesting accepted. FHIR resources (Questionnaire items, extensions within extensions)
#: stay far below it; deeper documents would only strain whatever walks them next.
MAX_DEPTH = 64


class JSONError(ValueError):
    """The text is not JSON, or is nested deeper than :data:`MAX_DEPTH`."""


def loads(text: str | bytes | bytearray, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads(text)``, refusing documents nested deeper than ``max_depth`` (JSONError)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise JSONError(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise JSONError(str(exc)) from None
    if isinstance(value, dict | list) and depth_exceeds(value, max_depth):
        raise JSONError(f"JSON nested deeper than {max_depth} levels")
    return value


def depth_exceeds(value: Any, max_depth: int) -> bool:
    """True when containers in ``value`` nest deeper than ``max_depth`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if level > max_depth:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return False
