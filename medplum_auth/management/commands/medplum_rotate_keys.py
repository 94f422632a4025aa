"""``manage.py medplum_rotate_keys``: rotate or retire token signing keys."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from medplum_auth import keys, services
from medplum_auth.management.base import MedplumCommand


class Command(MedplumCommand):
    help = (
        "Create a new active signing key; the previous one stays published in the JWKS so tokens it "
        "signed still verify. With --retire=KID, stop publishing an inactive key (write the '=': a kid "
        "may begin with '-')."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--algorithm", choices=sorted(keys.ALGORITHMS),
                            help="Algorithm of the new key; default: MEDPLUM_AUTH['SIGNING_ALGORITHM'].")
        parser.add_argument("--retire", metavar="KID",
                            help="Retire the inactive key with this kid; tokens it signed stop verifying. Write "
                                 "--retire=KID: a kid (base64url) may begin with '-', which argparse would "
                                 "take for an option.")

    def run(self, **options: Any) -> dict[str, Any]:
        if options["retire"] and options["algorithm"]:
            raise CommandError("Give either --algorithm (rotate) or --retire=KID, not both.")
        if options["retire"]:
            row = services.retire_signing_key(options["retire"])
            result: dict[str, Any] = {"kid": row.kid, "algorithm": row.algorithm, "retired": True}
        else:
            row = services.rotate_signing_keys(options["algorithm"])
            result = {"kid": row.kid, "algorithm": row.algorithm, "status": row.status}
        result["published_kids"] = [jwk["kid"] for jwk in keys.jwks()["keys"]]
        return result
