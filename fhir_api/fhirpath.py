"""FHIRPath text helpers shared by the search parameters and their data generator (no imports)."""

from __future__ import annotations


def split_expression(expression: str) -> list[str]:
    """The top-level ``|`` alternatives of a FHIRPath expression."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(expression):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]
