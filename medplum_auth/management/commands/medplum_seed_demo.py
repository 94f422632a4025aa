"""``manage.py medplum_seed_demo``: a ready-to-try demo project, for development only.

Idempotent: whatever already exists is reused and left unchanged, so a second run creates
nothing (except that a public client seeded before the demo client app existed gets its sign-out
and launch URIs). The confidential client's secret is printed only by the run that creates it. Apps that
keep data of their own add demo data through ``medplum_auth.signals.demo_seeded`` (``fhir_api``:
the demo patient's Observations and Conditions); this app never imports them.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from medplum_auth import services
from medplum_auth.management.base import MedplumCommand
from medplum_auth.models import AccessPolicy, ClientApplication, DefaultAccessPolicy, Project, ProjectMembership
from medplum_auth.signals import demo_seeded

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "Demo-Admin-2026!"
PROJECT_NAME = "Demo Project"
POLICY_NAME = "Patient compartment"
PUBLIC_CLIENT_ID = "medplum-demo-public"
CONFIDENTIAL_CLIENT_ID = "medplum-demo-confidential"
#: The demo client app (``examples/demo_client``, ``python3 dev.py demo``) is served here.
DEMO_CLIENT_URL = "http://127.0.0.1:8888"
REDIRECT_URI = f"{DEMO_CLIENT_URL}/callback"
POST_LOGOUT_REDIRECT_URI = f"{DEMO_CLIENT_URL}/signed-out"
LAUNCH_URI = f"{DEMO_CLIENT_URL}/launch"
PRACTITIONER = {"email": "practitioner@example.com", "password": "Demo-Practitioner-2026!",
                "first_name": "Alice", "last_name": "Smith"}
PATIENT = {"email": "patient@example.com", "password": "Demo-Patient-2026!",
           "first_name": "Homer", "last_name": "Simpson"}
ROLES = {
    "admin": "superuser: Django admin (/admin/) and every project's Project Admin (/project-admin/)",
    "practitioner": "Practitioner and admin of Demo Project: Project Admin pages; signs in to apps with the "
                    "whole project's data (no access policy)",
    "patient": "Patient of Demo Project: signs in to apps and sees only their own record "
               "(Patient compartment policy)",
}

# Types a patient may read and search when the resource points at them.
PATIENT_COMPARTMENT: dict[str, str] = {
    "Observation": "subject",
    "Condition": "subject",
    "AllergyIntolerance": "patient",
    "MedicationRequest": "subject",
    "Immunization": "patient",
    "Encounter": "subject",
    "DiagnosticReport": "subject",
    "DocumentReference": "subject",
}
PATIENT_POLICY: list[dict[str, Any]] = [
    {"resourceType": "Patient", "criteria": "Patient?_id=%patient.id", "interaction": ["read", "search"]},
    *({"resourceType": rtype, "criteria": f"{rtype}?{param}=%patient", "interaction": ["read", "search"]}
      for rtype, param in PATIENT_COMPARTMENT.items()),
]


class Command(MedplumCommand):
    help = (
        "Create a demo project with an admin, a practitioner, a patient, a patient access policy and two "
        "clients. Safe to run again: existing objects are kept. Development only: the passwords are public."
    )

    def run(self, **options: Any) -> dict[str, Any]:
        created: list[str] = []
        admin = self.seed_admin(created)
        project = Project.objects.filter(name=PROJECT_NAME).first()
        if project is None:
            project = services.create_project(PROJECT_NAME, description="Demo data from medplum_seed_demo.",
                                              owner=admin)
            created.append("project")
        policy = AccessPolicy.objects.filter(project=project, name=POLICY_NAME).first()
        if policy is None:
            policy = services.create_access_policy(
                project, POLICY_NAME, PATIENT_POLICY,
                description="A patient reads and searches their own record and compartment.")
            created.append("access_policy")
        default = DefaultAccessPolicy.objects.filter(project=project, profile_type="Patient").first()
        if default is None:
            default = services.set_default_access_policy(project, "Patient", policy)
            created.append("default_access_policy")
        public, _ = self.seed_client(project, PUBLIC_CLIENT_ID, "Demo public client", True, created,
                                     post_logout_redirect_uris=POST_LOGOUT_REDIRECT_URI, launch_uri=LAUNCH_URI)
        if not (public.launch_uri and public.post_logout_redirect_uris):
            services.update_client(public, launch_uri=public.launch_uri or LAUNCH_URI,
                                   post_logout_redirect_uris=public.post_logout_redirect_uris
                                   or POST_LOGOUT_REDIRECT_URI)
            created.append(f"{PUBLIC_CLIENT_ID} demo client URIs")
        confidential, secret = self.seed_client(project, CONFIDENTIAL_CLIENT_ID, "Demo confidential client",
                                                False, created)
        practitioner, practitioner_membership = self.seed_member(project, PRACTITIONER, "Practitioner", created,
                                                                 admin=True)
        patient, patient_membership = self.seed_member(project, PATIENT, "Patient", created, access_policy=policy)
        signing_key = services.ensure_signing_key()
        demo_data: dict[str, Any] = {}
        for _receiver, result in demo_seeded.send(sender=type(self), project=project, patient=patient_membership,
                                                  practitioner=practitioner_membership):
            if isinstance(result, dict):
                demo_data.update(result)

        confidential_out: dict[str, Any] = {"client_id": confidential.client_id,
                                            "redirect_uris": confidential.redirect_uri_list}
        if secret:
            confidential_out["client_secret"] = secret
        else:
            confidential_out["client_secret_status"] = "unchanged (shown only when created)"
            confidential_out["rotate_command"] = (
                f"python manage.py medplum_rotate_client_secret --client-id {confidential.client_id}")
        return {
            "admin": {"email": admin.email, "username": admin.get_username(),
                      "password": self.known_password(admin, ADMIN_PASSWORD), "role": ROLES["admin"]},
            "project": {"id": str(project.id), "name": project.name},
            "access_policy": {"id": str(policy.id), "name": policy.name, "rules": len(policy.resources),
                              "default_for_patient": default.access_policy_id == policy.id},
            "public_client": {"client_id": public.client_id, "redirect_uris": public.redirect_uri_list,
                              "post_logout_redirect_uris": public.post_logout_redirect_uris.split(),
                              "launch_uri": public.launch_uri},
            "confidential_client": confidential_out,
            "practitioner": practitioner,
            "patient": patient,
            "signing_key": signing_key.kid,
            "demo_data": demo_data,
            "created": created,
        }

    def seed_admin(self, created: list[str]) -> Any:
        User = get_user_model()
        username_field = User.USERNAME_FIELD
        admin = User._default_manager.filter(**{f"{username_field}__iexact": ADMIN_EMAIL}).first()
        if admin is None:
            # Superusers have no services function: Django's manager is their one write path.
            fields = {username_field: ADMIN_EMAIL}
            if username_field != "email":
                fields["email"] = ADMIN_EMAIL
            admin = User._default_manager.create_superuser(**fields, password=ADMIN_PASSWORD)
            created.append("admin")
        return admin

    def seed_client(self, project: Project, client_id: str, name: str, public: bool,
                    created: list[str], **fields: Any) -> tuple[ClientApplication, str | None]:
        client = ClientApplication.objects.filter(client_id=client_id).first()
        if client is not None:
            return client, None
        created.append(client_id)
        return services.create_client(project, name, redirect_uris=[REDIRECT_URI], public=public,
                                      client_id=client_id, **fields)

    def seed_member(self, project: Project, person: dict[str, str], profile_type: str, created: list[str],
                    *, admin: bool = False, access_policy: AccessPolicy | None = None,
                    ) -> tuple[dict[str, Any], ProjectMembership]:
        membership = (ProjectMembership.objects.select_related("user")
                      .filter(project=project, profile_type=profile_type, user__email__iexact=person["email"])
                      .first())
        if membership is None:
            user_exists = get_user_model()._default_manager.filter(email__iexact=person["email"]).exists()
            membership = services.invite_member(
                project, person["email"], profile_type=profile_type,
                first_name=person["first_name"], last_name=person["last_name"],
                # An invite never changes an existing user's password.
                password=None if user_exists else person["password"],
                admin=admin, access_policy=access_policy,
            ).membership
            created.append(profile_type.lower())
        return {"email": membership.user.email, "password": self.known_password(membership.user, person["password"]),
                "profile": membership.profile, "admin": membership.admin,
                "role": ROLES[profile_type.lower()]}, membership

    @staticmethod
    def known_password(user: Any, password: str) -> str | None:
        """The demo password when it is the user's password; ``None`` for an account we did not set up."""
        return password if user.check_password(password) else None
