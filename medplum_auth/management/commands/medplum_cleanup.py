"""``manage.py medplum_cleanup``: delete expired logins, spent client-assertion ids and old launches (run daily)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import CommandError, CommandParser

from medplum_auth import audit, logins
from medplum_auth.conf import auth_settings
from medplum_auth.management.base import MedplumCommand


class Command(MedplumCommand):
    help = ("Delete logins whose tokens have all expired (or that were revoked) more than --days ago, "
            "expired private_key_jwt jti records, and security events older than AUDIT_RETENTION_DAYS. "
            "Safe to run from cron.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=30,
                            help="Keep logins created in the last N days (default 30), for audit and introspection.")

    def run(self, **options: Any) -> dict[str, Any]:
        days = options["days"]
        longest_access = int(auth_settings.ACCESS_TOKEN_LIFETIME)
        if days < 1 or days * 86400 < longest_access:
            raise CommandError(f"--days must be at least 1 and cover the access token lifetime ({longest_access} s).")
        deleted = logins.purge(timedelta(days=days))
        try:
            retention = audit.retention_days()
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if retention is not None:
            deleted["audit_events"] = audit.prune(retention)
        return {"deleted": deleted, "days": days}
