"""``manage.py medplum_create_access_policy``: create an access policy from a JSON file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from medplum_auth import services
from medplum_auth.management.base import MedplumCommand


class Command(MedplumCommand):
    help = (
        "Create an access policy from JSON: a list of rules, or a Medplum AccessPolicy resource "
        "with a 'resource' list. Prints its id, name and number of rules."
    )
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project id or exact name.")
        parser.add_argument("--name", required=True, help="Policy name; unique within the project.")
        parser.add_argument("--file", required=True, metavar="PATH",
                            help="JSON file with the rules; '-' reads standard input.")
        parser.add_argument("--description", default="", help="Free-text description.")

    def read_policy(self, path: str, stdin: Any) -> str:
        if path == "-":
            return stdin.read()
        try:
            return Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CommandError(f"Policy file {path!r} does not exist.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read policy file {path!r}: {exc}") from None

    def run(self, **options: Any) -> dict[str, Any]:
        text = self.read_policy(options["file"], options.get("stdin") or sys.stdin)
        project = self.get_project(options["project"])
        policy = services.create_access_policy(project, options["name"], text, description=options["description"])
        return {"id": str(policy.id), "name": policy.name, "project": str(project.id), "rules": len(policy.resources)}
