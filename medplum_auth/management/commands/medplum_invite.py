"""``manage.py medplum_invite``: add a user to a project with a FHIR profile."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from medplum_auth import services
from medplum_auth.management.base import MedplumCommand
from medplum_auth.models import ProfileType


class Command(MedplumCommand):
    help = (
        "Invite a member: create the user when the email is new, then the profile and the membership. "
        "An existing user is reused and keeps their password."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project id or exact name.")
        parser.add_argument("--email", required=True, help="The member's email address (also the username).")
        parser.add_argument("--password",
                            help="Password for a new user (checked by AUTH_PASSWORD_VALIDATORS). Without it "
                                 "the user has no usable password until one is set. Refused for an existing user. "
                                 "Visible in the process list and shell history: use only for test accounts.")
        parser.add_argument("--profile-type", required=True, choices=ProfileType.values,
                            help="FHIR resource type of the member's profile.")
        parser.add_argument("--first-name", required=True, help="Given name.")
        parser.add_argument("--last-name", required=True, help="Family name.")
        parser.add_argument("--admin", action="store_true", help="Make the member a project admin.")
        parser.add_argument("--access-policy", metavar="POLICY",
                            help="Access policy id or name in the project; default: the project's default "
                                 "policy for the profile type, if any.")

    def run(self, **options: Any) -> dict[str, Any]:
        project = self.get_project(options["project"])
        policy = self.get_access_policy(project, options["access_policy"]) if options["access_policy"] else None
        invitation = services.invite_member(
            project,
            options["email"],
            profile_type=options["profile_type"],
            first_name=options["first_name"],
            last_name=options["last_name"],
            password=options["password"],
            admin=options["admin"],
            access_policy=policy,
        )
        membership = invitation.membership
        return {
            "user_id": invitation.user.pk,
            "email": invitation.user.email,
            "membership_id": str(membership.id),
            "profile": membership.profile,
            "project": str(project.id),
            "admin": membership.admin,
            "access_policy": str(membership.access_policy_id) if membership.access_policy_id else None,
            "created_user": invitation.created_user,
        }
