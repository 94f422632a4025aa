"""``manage.py medplum_prune_audit [--older-than DAYS]``: delete old security events (run daily)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from medplum_auth import audit
from medplum_auth.management.base import MedplumCommand

MAX_DAYS = 365 * 1000


class Command(MedplumCommand):
    help = ("Delete security events (the audit trail) recorded more than --older-than days ago; without it, "
            "AUDIT_RETENTION_DAYS (default 365) applies. Safe to run from cron.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", dest="older_than", metavar="DAYS",
                            help="Delete events older than DAYS days (a positive integer).")

    def run(self, **options: Any) -> dict[str, Any]:
        raw = options.get("older_than")
        if raw is None:
            try:
                days = audit.retention_days()
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            if days is None:
                return {"deleted": 0, "older_than_days": None, "retention": "forever (AUDIT_RETENTION_DAYS=None)"}
        else:
            text = str(raw).strip()
            if not text.isdigit() or not 1 <= int(text) <= MAX_DAYS:
                raise CommandError(f"--older-than must be a whole number of days from 1 to {MAX_DAYS}, not {raw!r}.")
            days = int(text)
        return {"deleted": audit.prune(days), "older_than_days": days}
