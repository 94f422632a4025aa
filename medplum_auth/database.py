"""The database: SQLite's options for a multi-process server, and which database errors mean
"busy" or "unavailable" (both: answer 503 and let the client retry).

No settings or models: ``config/settings.py`` (and a host site's settings) call
:func:`with_sqlite_options` while settings are being read.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import InterfaceError, OperationalError

log = logging.getLogger("medplum_auth.database")

SQLITE_ENGINE = "django.db.backends.sqlite3"

#: ``DATABASES[…]["OPTIONS"]`` for SQLite behind a server with several processes or threads
#: (Django 5.1+). Write-ahead log: readers never wait for the writer (the mode is stored in the
#: file; ``synchronous=NORMAL`` is WAL's safe and fast setting). ``transaction_mode`` IMMEDIATE:
#: every ``atomic()`` block takes the write lock at BEGIN, so a writer waits (up to ``timeout``
#: seconds) instead of failing with "database is locked" when it upgrades a read lock that another
#: process's commit has made stale, which SQLite refuses at once, without waiting.
SQLITE_OPTIONS: dict[str, Any] = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "timeout": 20,
    "transaction_mode": "IMMEDIATE",
}

#: Seconds a client is told to wait (``Retry-After``) when the database was too busy to answer.
RETRY_AFTER_SECONDS = 5
BUSY_TEXT = "The database is busy; retry in a few seconds."
UNAVAILABLE_TEXT = "The database is unavailable; retry in a few seconds."
#: Set on a request answered 503 because the database is unreachable (:class:`QuietOutage`).
UNAVAILABLE_ATTRIBUTE = "medplum_database_unavailable"

# PostgreSQL's "try again" SQLSTATEs: lock_not_available (lock_timeout), serialization_failure,
# deadlock_detected.
_RETRYABLE_SQLSTATES = frozenset({"55P03", "40001", "40P01"})
_SQLITE_BUSY_MESSAGES = ("database is locked", "database table is locked")
# PostgreSQL's "the server is not there": class 08 (connection exception), admin_shutdown,
# crash_shutdown, cannot_connect_now (starting up or shutting down), too_many_connections.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def with_sqlite_options(database: dict[str, Any]) -> dict[str, Any]:
    """``database`` (one ``DATABASES`` entry) with :data:`SQLITE_OPTIONS` added when it is SQLite.

    Options the entry already has win; other engines are returned unchanged.
    """
    if database.get("ENGINE") != SQLITE_ENGINE:
        return database
    return {**database, "OPTIONS": {**SQLITE_OPTIONS, **database.get("OPTIONS", {})}}


def is_busy(exc: BaseException) -> bool:
    """True for a database error that says "busy, try again": SQLite's lock timeout, PostgreSQL's
    lock timeout, serialization failure or deadlock. The transaction it ended was rolled back."""
    if not isinstance(exc, OperationalError):
        return False
    if getattr(exc.__cause__, "sqlstate", None) in _RETRYABLE_SQLSTATES:
        return True
    message = str(exc).lower()
    return any(text in message for text in _SQLITE_BUSY_MESSAGES)


def is_unavailable(exc: BaseException) -> bool:
    """True for a database error that says "the server cannot be reached": refused or lost
    connections and a server shutting down or starting up (PostgreSQL). Nothing was committed."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    cause = exc.__cause__
    if cause is None and isinstance(exc, InterfaceError):  # Django's own "connection already closed"
        return True
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate:
        return sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES
    try:
        import psycopg
    except ImportError:  # a site without PostgreSQL
        return False
    # psycopg gives no SQLSTATE when the server never answered: connect refused, connection lost.
    return isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError)


def is_retryable(exc: BaseException) -> bool:
    """Busy or unavailable: the answer is a 503 with ``Retry-After``, never a 500."""
    return is_busy(exc) or is_unavailable(exc)


class OutageLog:
    """One log line when a process starts answering 503 because the database is unreachable, one
    when it connects again; nothing per request in between (no traceback storm)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None
        self.answered = 0

    def failed(self, exc: BaseException, where: str) -> None:
        with self._lock:
            first = self.since is None
            if first:
                self.since = time.monotonic()
            self.answered += 1
        if first:
            log.error("database unavailable, answering 503 until it is back (first: %s): %s",
                      where, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)

    def connected(self, **kwargs: Any) -> None:
        """``connection_created`` receiver: a new connection means the database is back."""
        if self.since is None:  # the common case, without the lock
            return
        with self._lock:
            since, answered, self.since, self.answered = self.since, self.answered, None, 0
        if since is not None:
            log.warning("database available again after %.1f s; %d requests answered 503", time.monotonic() - since,
                        answered)


#: The process's outage log (``medplum_auth.apps`` connects it to ``connection_created``).
outage = OutageLog()


def note_unavailable(request: Any, exc: BaseException) -> None:
    """Count ``request``'s 503 in the process's outage (the first one of an outage is logged)."""
    setattr(request, UNAVAILABLE_ATTRIBUTE, True)
    outage.failed(exc, f"{request.method} {request.path}")


class QuietOutage(logging.Filter):
    """``django.request`` log filter: drops the per-request line (and the traceback of an error
    raised outside a view, which becomes a 503 too) of requests answered 503 during an outage
    (:data:`outage` logs the outage itself, once). Here, not in ``middleware``: ``LOGGING``
    is configured before the apps are loaded."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) not in (500, 503):
            return True
        return not getattr(getattr(record, "request", None), UNAVAILABLE_ATTRIBUTE, False)
