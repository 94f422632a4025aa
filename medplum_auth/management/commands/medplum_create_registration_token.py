"""``manage.py medplum_create_registration_token``: an initial access token for dynamic client
registration (RFC 7591 §3, ``POST /oauth2/register``) in a project."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from medplum_auth import services
from medplum_auth.management.base import MedplumCommand


class Command(MedplumCommand):
    help = ("Create an initial access token that registers clients into a project through "
            "POST /oauth2/register. Prints the token: it is shown only now and stored only as a digest.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project id or exact name.")
        parser.add_argument("--label", default="", help="What the token is for (shown in the admin).")
        parser.add_argument("--access-policy", metavar="POLICY",
                            help="Access policy id or name in the project that registered clients get.")
        parser.add_argument("--days", type=int, default=None,
                            help="Days until the token expires (default: until revoked).")

    def run(self, **options: Any) -> dict[str, Any]:
        project = self.get_project(options["project"])
        policy = self.get_access_policy(project, options["access_policy"]) if options["access_policy"] else None
        row, token = services.create_registration_token(project, label=options["label"], access_policy=policy,
                                                        lifetime_days=options["days"])
        return {
            "registration_token": token,
            "id": row.pk,
            "project": str(project.id),
            "access_policy": str(policy.id) if policy else None,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        }
