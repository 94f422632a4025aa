"""``manage.py medplum_create_project --name N``: create a project (a tenant)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from medplum_auth import services
from medplum_auth.management.base import MedplumCommand


class Command(MedplumCommand):
    help = "Create a project (a tenant). Prints its id and name."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="Project name; unique across the server.")
        parser.add_argument("--description", default="", help="Free-text description.")

    def run(self, **options: Any) -> dict[str, Any]:
        project = services.create_project(options["name"], description=options["description"])
        return {"id": str(project.id), "name": project.name}
