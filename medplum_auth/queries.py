"""Query helpers for the hot paths (token, userinfo and authorization endpoints); the hot lookups
themselves are ``medplum_auth.lookups``."""

from __future__ import annotations

from typing import TypeVar

from django.db.models import Model, QuerySet

M = TypeVar("M", bound=Model)


def one_or_none(queryset: QuerySet[M]) -> M | None:
    """The row of a lookup on a unique key, or ``None``.

    Unlike ``.first()`` it adds no ``ORDER BY``: with a unique key there is nothing to order,
    and the models' default orderings (a join, for clients) only cost query compilation.
    """
    return next(iter(queryset.order_by()[:1]), None)
