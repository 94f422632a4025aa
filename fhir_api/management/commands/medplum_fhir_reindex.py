"""``manage.py medplum_fhir_reindex [--type TYPE] [--batch N]``: rewrite search index rows in today's format.

Run it after an upgrade that changes how values are indexed (the CHANGELOG says when). Searches
answer correctly before it runs: it only drops rows the current format no longer needs (the
quantity ``|code`` rows beside ``system|code``). Resources are rewritten in batches, each in its
own transaction with its rows locked, so it can run while the server takes writes, and again.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fhir_api.models import Resource
from fhir_api.repository import reindex
from fhir_api.search_params import RESOURCE_TYPES


class Command(BaseCommand):
    help = ("Rewrite the FHIR search index of stored resources where it differs from what a write stores now "
            "(after an upgrade that changes the index format). Safe to run while serving, and again.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--type", dest="resource_type", help="Only resources of this type (e.g. Observation).")
        parser.add_argument("--batch", type=int, default=500, help="Resources per transaction (default 500).")

    def handle(self, *args: Any, **options: Any) -> None:
        resource_type, batch = options.get("resource_type"), options["batch"]
        if resource_type is not None and resource_type not in RESOURCE_TYPES:
            raise CommandError(f"Unknown resource type {resource_type!r}.")
        if batch < 1:
            raise CommandError("--batch must be a positive number.")
        rows = Resource.objects.all() if resource_type is None else Resource.objects.filter(resource_type=resource_type)
        checked = changed = 0
        last = 0
        while True:
            keys = list(rows.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:batch])
            if not keys:
                break
            changed += reindex(Resource.objects.filter(pk__in=keys))
            checked, last = checked + len(keys), keys[-1]
        self.stdout.write(f"checked: {checked}\nreindexed: {changed}")
