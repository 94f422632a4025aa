"""What every ``medplum_…`` management command shares.

A command subclasses :class:`MedplumCommand` and implements :meth:`~MedplumCommand.run`,
which returns the result as a dict. The base class then

* runs ``run`` in one transaction, so a failing command writes nothing;
* turns the services' ``ValidationError`` into ``CommandError`` (non-zero exit, message on stderr);
* prints the result after the commit: one JSON object with ``--json``, else ``key: value`` lines.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from ..models import AccessPolicy, ClientApplication, Project


def validation_message(exc: ValidationError) -> str:
    """One line listing every message, each prefixed by its field name (``field: message``)."""
    if hasattr(exc, "error_dict"):
        parts = [
            message if field == "__all__" else f"{field}: {message}"
            for field, messages in exc.message_dict.items()
            for message in messages
        ]
    else:
        parts = list(exc.messages)
    return "; ".join(parts) or "Invalid input."


def _parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _flatten(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value) or "(none)"
    return str(value)


class MedplumCommand(BaseCommand):
    """Base of the operator commands: ``--json``, one transaction, ``CommandError`` on bad input."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.add_argument("--json", action="store_true", dest="json",
                            help="Print the result as one JSON object on stdout.")
        return parser

    def run(self, **options: Any) -> dict[str, Any]:
        """Do the work and return what to print; raise ``CommandError`` or ``ValidationError``."""
        raise NotImplementedError

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            with transaction.atomic():
                result = self.run(**options)
        except ValidationError as exc:
            raise CommandError(validation_message(exc)) from exc
        self.emit(result, as_json=options.get("json", False))

    def emit(self, result: dict[str, Any], *, as_json: bool) -> None:
        """Print ``result``: JSON, or ``key: value`` lines (nested keys dotted, ``None`` left out)."""
        if as_json:
            self.stdout.write(json.dumps(result, default=str))
            return
        for key, value in _flatten(result):
            if value is not None:
                self.stdout.write(f"{key}: {_text(value)}")

    # Lookups shared by the commands. Each raises CommandError naming what was not found.

    def get_project(self, ref: str) -> Project:
        """A project by UUID or exact name."""
        ref = (ref or "").strip()
        pk = _parse_uuid(ref)
        project = (Project.objects.filter(pk=pk).first() if pk else None) or Project.objects.filter(name=ref).first()
        if project is None:
            raise CommandError(f"Unknown project {ref!r}: give a project id or its exact name.")
        return project

    def get_access_policy(self, project: Project, ref: str) -> AccessPolicy:
        """An access policy of ``project`` by UUID or exact name."""
        ref = (ref or "").strip()
        pk = _parse_uuid(ref)
        policies = AccessPolicy.objects.filter(project=project)
        policy = (policies.filter(pk=pk).first() if pk else None) or policies.filter(name=ref).first()
        if policy is None:
            raise CommandError(f"Unknown access policy {ref!r} in project {project.name!r}: "
                               "give a policy id or its exact name.")
        return policy

    def get_client(self, client_id: str) -> ClientApplication:
        """A client by its OAuth ``client_id``."""
        client = ClientApplication.objects.select_related("project").filter(client_id=(client_id or "").strip()).first()
        if client is None:
            raise CommandError(f"Unknown client {client_id!r}.")
        return client
