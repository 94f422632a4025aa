"""The database: SQLite's options for a multi-process server, and which database errors mean "busy".

Pure functions with no settings or models: ``config/settings.py`` (and a host site's settings)
call :func:`with_sqlite_options` while settings are being read.
"""

from __future__ import annotations

from typing import Any

from django.db import OperationalError

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

# PostgreSQL's "try again" SQLSTATEs: lock_not_available (lock_timeout), serialization_failure,
# deadlock_detected.
_RETRYABLE_SQLSTATES = frozenset({"55P03", "40001", "40P01"})
_SQLITE_BUSY_MESSAGES = ("database is locked", "database table is locked")


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
