"""``python -m tests.e2e.seed_server``: migrate the e2e server settings' database and seed it.

For tests whose server runs on a database of its own (not the test session's): a project, a
confidential client (``client_credentials``, one redirect URI) and a Patient with a password,
printed as one JSON line. Run with :func:`tests.e2e.conftest.server_environment`.
"""

from __future__ import annotations

import json

import django

EMAIL = "outage.patient@example.org"
PASSWORD = "Outage-Patient-Password-2026!"
REDIRECT_URI = "https://app.example.org/callback"


def main() -> None:
    django.setup()
    from django.core.management import call_command

    from medplum_auth import services

    call_command("migrate", "--noinput", verbosity=0)
    project = services.create_project("Outage Clinic")
    client, secret = services.create_client(project, "Outage app", redirect_uris=[REDIRECT_URI])
    services.invite_member(project, EMAIL, profile_type="Patient", first_name="Pat", last_name="Lee",
                           password=PASSWORD)
    print(json.dumps({"client_id": client.client_id, "client_secret": secret, "email": EMAIL,
                      "password": PASSWORD, "redirect_uri": REDIRECT_URI}))


if __name__ == "__main__":
    main()
