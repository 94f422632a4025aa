"""``manage.py medplum_rotate_client_secret``: two-step client secret rotation."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from medplum_auth import services
from medplum_auth.management.base import MedplumCommand


class Command(MedplumCommand):
    help = (
        "Issue a new client secret; the old one stays valid (as the retiring secret) until you run "
        "again with --retire, once every deployment of the client uses the new one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--client-id", required=True, help="The client's OAuth client_id.")
        parser.add_argument("--retire", action="store_true",
                            help="Instead of rotating, stop accepting the previous (retiring) secret.")

    def run(self, **options: Any) -> dict[str, Any]:
        client = self.get_client(options["client_id"])
        if not client.is_confidential:
            raise CommandError(f"Client {client.client_id!r} is public and has no secret.")
        if options["retire"]:
            services.retire_client_secret(client)
            return {"client_id": client.client_id, "retired": True}
        secret = services.rotate_client_secret(client)
        return {"client_id": client.client_id, "client_secret": secret, "previous_secret_valid_until_retired": True}
