"""``manage.py medplum_create_client``: register an OAuth client in a project."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from medplum_auth import services
from medplum_auth.management.base import MedplumCommand


class Command(MedplumCommand):
    help = (
        "Create a client application. Prints its client_id and, for a confidential client, "
        "the client_secret: it is shown only now and stored only as a digest."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project id or exact name.")
        parser.add_argument("--name", required=True, help="Client name shown to users.")
        parser.add_argument("--redirect-uri", action="append", required=True, dest="redirect_uris",
                            metavar="URI",
                            help="Registered redirect URI; repeat for several. https, or http only for "
                                 "localhost/127.0.0.1; no fragment; matched exactly.")
        parser.add_argument("--public", action="store_true",
                            help="A public client (browser or native app): no secret, PKCE required.")
        parser.add_argument("--pkce-optional", action="store_true",
                            help="Let this confidential client use the code flow without PKCE (not recommended).")
        parser.add_argument("--access-policy", metavar="POLICY",
                            help="Access policy id or name in the project, applied to client_credentials tokens.")
        parser.add_argument("--description", default="", help="Free-text description.")

    def run(self, **options: Any) -> dict[str, Any]:
        project = self.get_project(options["project"])
        policy = self.get_access_policy(project, options["access_policy"]) if options["access_policy"] else None
        client, secret = services.create_client(
            project,
            options["name"],
            redirect_uris=options["redirect_uris"],
            public=options["public"],
            pkce_optional=options["pkce_optional"],
            access_policy=policy,
            description=options["description"],
        )
        return {
            "client_id": str(client.client_id),  # the model default is a UUID object
            "client_secret": secret,
            "name": client.name,
            "public": not client.is_confidential,
            "project": str(project.id),
            "access_policy": str(policy.id) if policy else None,
            "redirect_uris": client.redirect_uri_list,
        }
