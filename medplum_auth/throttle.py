"""Failure counters in Django's cache: sign-in, the token endpoints and password reset.

One mechanism for every throttle. A :class:`Counter` counts failures of one kind (``scope``)
for one source (``parts``, e.g. an email and an address) in fixed windows of ``window`` seconds;
once it holds ``limit`` failures the source is refused until its window ends. Keys are SHA-256
digests of the parts (no raw client id or email in the cache, and safe for memcached), and the
state lives only in Django's cache, so instances sharing a cache (``REDIS_URL``) share it.

Only failures write. Asking whether anything is over its limit is one ``get_many``; clearing
after a success is one ``delete_many``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.core.cache import cache


@dataclass(frozen=True)
class Counter:
    scope: str
    parts: tuple[str, ...]
    limit: int
    window: int

    def key(self, now: float) -> str:
        digest = hashlib.sha256("\n".join(self.parts).encode("utf-8", "surrogatepass")).hexdigest()
        return f"medplum_auth:{self.scope}:{int(now // self.window)}:{digest}"

    def seconds_left(self, now: float) -> int:
        """Seconds until this counter's current window ends (at least 1)."""
        return max(1, math.ceil((int(now // self.window) + 1) * self.window - now))


def retry_after(counters: Sequence[Counter]) -> int | None:
    """Seconds to wait when any counter is at its limit, else ``None``; one cache read."""
    now = time.time()
    keyed = {counter.key(now): counter for counter in counters}
    values = cache.get_many(list(keyed))
    waits = [counter.seconds_left(now) for key, counter in keyed.items() if values.get(key, 0) >= counter.limit]
    return max(waits) if waits else None


def record_failure(counters: Sequence[Counter]) -> list[Counter]:
    """Count one failure on every counter; return those that have just reached their limit."""
    now = time.time()
    reached = []
    for counter in counters:
        key = counter.key(now)
        timeout = counter.seconds_left(now) + 1
        cache.add(key, 0, timeout)
        try:
            value = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout)
            value = 1
        if value == counter.limit:
            reached.append(counter)
    return reached


def clear(counters: Sequence[Counter]) -> None:
    now = time.time()
    cache.delete_many([counter.key(now) for counter in counters])
