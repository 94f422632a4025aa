"""The operator CLI: ``medplum_*`` management commands.

Each command prints one JSON object with ``--json`` and fails with ``CommandError`` (non-zero
exit) on bad input, writing nothing. Failure tests compare row counts before and after.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from medplum_auth import services
from medplum_auth.management.commands.medplum_seed_demo import ROLES
from medplum_auth.models import (
    AccessPolicy,
    ClientApplication,
    DefaultAccessPolicy,
    Project,
    ProjectMembership,
    SigningKey,
)
from medplum_auth.validators import validate_redirect_uri
from tests.factories import (
    DEFAULT_PASSWORD,
    AccessPolicyFactory,
    ClientApplicationFactory,
    UserFactory,
)

ROOT = Path(__file__).resolve().parents[1]
User = get_user_model()

POLICY_RULES = [
    {"resourceType": "Patient", "criteria": "Patient?_id=%patient.id", "interaction": ["search", "read"]},
    {"resourceType": "Observation", "criteria": "Observation?subject=%patient", "readonly": True},
]


def run_json(name: str, *args: str, **kwargs: Any) -> dict[str, Any]:
    """Run a command with ``--json``; stdout must be exactly one JSON object."""
    out = io.StringIO()
    call_command(name, *args, "--json", stdout=out, **kwargs)
    data = json.loads(out.getvalue())
    assert isinstance(data, dict)
    return data


def run_text(name: str, *args: str, **kwargs: Any) -> dict[str, str]:
    """Run a command without ``--json``; every line is ``key: value``."""
    out = io.StringIO()
    call_command(name, *args, stdout=out, **kwargs)
    lines = out.getvalue().splitlines()
    assert lines and all(": " in line for line in lines), lines
    return dict(line.split(": ", 1) for line in lines)


def row_counts() -> dict[str, int]:
    return {model.__name__: model._default_manager.count() for model in (
        User, Project, AccessPolicy, DefaultAccessPolicy, ProjectMembership, ClientApplication, SigningKey)}


def assert_fails(name: str, *args: str, match: str, **kwargs: Any) -> str:
    """The command raises ``CommandError`` whose message contains ``match``, and adds no rows."""
    before = row_counts()
    out = io.StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command(name, *args, stdout=out, **kwargs)
    message = str(excinfo.value)
    assert match in message
    assert row_counts() == before
    assert out.getvalue() == ""
    return message


# medplum_create_project


@pytest.mark.django_db
def test_create_project_json():
    data = run_json("medplum_create_project", "--name", "Acme", "--description", "Test tenant")
    project = Project.objects.get(name="Acme")
    assert data == {"id": str(project.id), "name": "Acme"}
    assert project.description == "Test tenant"


@pytest.mark.django_db
def test_create_project_text():
    lines = run_text("medplum_create_project", "--name", "Acme")
    assert lines == {"id": str(Project.objects.get().id), "name": "Acme"}


def test_create_project_duplicate_name(project):
    assert_fails("medplum_create_project", "--name", project.name, match="name: Project with this Name already exists.")


@pytest.mark.django_db
def test_create_project_blank_name():
    assert_fails("medplum_create_project", "--name", "  ", match="name: This field cannot be blank.")


@pytest.mark.django_db
def test_create_project_requires_name():
    assert_fails("medplum_create_project", match="the following arguments are required: --name")


# medplum_create_client


def test_create_confidential_client(project, policy, caplog):
    caplog.set_level("DEBUG")
    data = run_json(
        "medplum_create_client", "--project", project.name, "--name", "Portal",
        "--redirect-uri", "https://app.example.org/callback", "--redirect-uri", "http://127.0.0.1:3000/cb",
        "--access-policy", policy.name, "--description", "Patient portal", "--pkce-optional",
    )
    client = ClientApplication.objects.get(client_id=data["client_id"])
    secret = data["client_secret"]
    assert len(secret) == 64
    assert client.client_secret.startswith("hmac-sha256$")
    assert secret not in client.client_secret
    assert client.verify_secret(secret)
    assert not client.verify_secret(secret + "x")
    assert client.is_confidential and client.pkce_optional
    assert client.access_policy == policy
    assert client.project == project
    assert client.description == "Patient portal"
    assert data["project"] == str(project.id)
    assert data["access_policy"] == str(policy.id)
    assert data["public"] is False
    assert data["redirect_uris"] == ["https://app.example.org/callback", "http://127.0.0.1:3000/cb"]
    assert client.redirect_uri_list == data["redirect_uris"]
    assert secret not in caplog.text


def test_create_public_client_by_project_id(project, policy):
    data = run_json("medplum_create_client", "--project", str(project.id), "--name", "SPA",
                    "--redirect-uri", "https://spa.example.org/", "--public", "--access-policy", str(policy.id))
    client = ClientApplication.objects.get(client_id=data["client_id"])
    assert data["client_secret"] is None
    assert data["public"] is True
    assert client.client_type == ClientApplication.CLIENT_PUBLIC
    assert client.client_secret == ""
    assert client.access_policy == policy


def test_create_client_text_omits_missing_secret(project):
    lines = run_text("medplum_create_client", "--project", project.name, "--name", "SPA",
                     "--redirect-uri", "https://spa.example.org/", "--public")
    assert "client_secret" not in lines
    assert lines["client_id"] == ClientApplication.objects.get().client_id
    assert lines["public"] == "true"
    assert lines["redirect_uris"] == "https://spa.example.org/"


def test_create_client_unknown_project(project):
    assert_fails("medplum_create_client", "--project", "Nope", "--name", "X",
                 "--redirect-uri", "https://a.example.org/cb", match="Unknown project 'Nope'")
    assert_fails("medplum_create_client", "--project", str(uuid.uuid4()), "--name", "X",
                 "--redirect-uri", "https://a.example.org/cb", match="Unknown project")


def test_create_client_unknown_access_policy(project):
    other = AccessPolicyFactory()  # exists, but in another project
    for ref in ("Nope", other.name, str(other.id)):
        assert_fails("medplum_create_client", "--project", project.name, "--name", "X",
                     "--redirect-uri", "https://a.example.org/cb", "--access-policy", ref,
                     match=f"Unknown access policy {ref!r} in project {project.name!r}")


@pytest.mark.parametrize("uri", [
    "http://app.example.org/callback",  # http, not loopback
    "/callback",  # relative
    "https://app.example.org/callback#done",  # fragment
])
def test_create_client_malformed_redirect_uri(project, uri):
    with pytest.raises(ValidationError) as expected:
        validate_redirect_uri(uri)
    message = assert_fails("medplum_create_client", "--project", project.name, "--name", "X",
                           "--redirect-uri", "https://ok.example.org/cb", "--redirect-uri", uri,
                           match=f"redirect_uris: {expected.value.messages[0]}")
    assert repr(uri) in message


def test_create_client_public_pkce_optional(project):
    assert_fails("medplum_create_client", "--project", project.name, "--name", "X", "--public", "--pkce-optional",
                 "--redirect-uri", "https://a.example.org/cb", match="pkce_optional: Public clients must use PKCE.")


def test_create_client_requires_redirect_uri(project):
    assert_fails("medplum_create_client", "--project", project.name, "--name", "X",
                 match="the following arguments are required: --redirect-uri")


# medplum_create_access_policy


def test_create_access_policy_from_file(project, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(POLICY_RULES))
    data = run_json("medplum_create_access_policy", "--project", project.name, "--name", "Patients",
                    "--file", str(path))
    policy = AccessPolicy.objects.get(project=project, name="Patients")
    assert data == {"id": str(policy.id), "name": "Patients", "project": str(project.id), "rules": 2}
    # Stored in normal form: interactions ordered, readonly expanded.
    assert policy.resources[0]["interaction"] == ["read", "search"]
    assert policy.resources[1]["interaction"] == ["read", "vread", "history", "search"]


def test_create_access_policy_from_stdin(project):
    resource = {"resourceType": "AccessPolicy", "name": "ignored", "resource": POLICY_RULES}
    lines = run_text("medplum_create_access_policy", "--project", str(project.id), "--name", "Stdin",
                     "--file", "-", stdin=io.StringIO(json.dumps(resource)))
    assert lines["rules"] == "2"
    assert AccessPolicy.objects.get(project=project, name="Stdin").id == uuid.UUID(lines["id"])


def test_create_access_policy_missing_file(project, tmp_path):
    missing = tmp_path / "missing.json"
    assert_fails("medplum_create_access_policy", "--project", project.name, "--name", "P", "--file", str(missing),
                 match=f"Policy file {str(missing)!r} does not exist.")


def test_create_access_policy_bad_json(project, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text('[{"resourceType": "Patient",')
    assert_fails("medplum_create_access_policy", "--project", project.name, "--name", "P", "--file", str(path),
                 match="Access policy is not valid JSON")


def test_create_access_policy_unknown_interaction(project, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps([{"resourceType": "Patient", "interaction": ["read", "obliterate"]}]))
    assert_fails("medplum_create_access_policy", "--project", project.name, "--name", "P", "--file", str(path),
                 match="Rule 1: unknown interaction(s) obliterate")


def test_create_access_policy_unknown_project(db, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(POLICY_RULES))
    assert_fails("medplum_create_access_policy", "--project", "Nope", "--name", "P", "--file", str(path),
                 match="Unknown project 'Nope'")


def test_create_access_policy_duplicate_name(policy, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(POLICY_RULES))
    assert_fails("medplum_create_access_policy", "--project", policy.project.name, "--name", policy.name,
                 "--file", str(path), match="already exists")


# medplum_invite

INVITE = ("--email", "Ada@Example.org", "--first-name", "Ada", "--last-name", "Lovelace")


def test_invite_new_patient_with_password_gets_default_policy(project, policy):
    DefaultAccessPolicy.objects.create(project=project, profile_type="Patient", access_policy=policy)
    data = run_json("medplum_invite", "--project", project.name, *INVITE, "--profile-type", "Patient",
                    "--password", "Lovelace-Engine-1843")
    membership = ProjectMembership.objects.get(id=data["membership_id"])
    user = membership.user
    assert data["user_id"] == user.pk
    assert data["created_user"] is True
    assert data["profile"] == f"Patient/{membership.profile_id}"
    assert data["access_policy"] == str(policy.id)
    assert data["admin"] is False
    assert user.email == user.username == "ada@example.org"
    assert user.check_password("Lovelace-Engine-1843")
    assert membership.access_policy == policy
    assert membership.profile_display == "Ada Lovelace"


def test_invite_admin_practitioner_with_policy_by_name(project, policy):
    lines = run_text("medplum_invite", "--project", str(project.id), *INVITE, "--profile-type", "Practitioner",
                     "--admin", "--access-policy", policy.name)
    membership = ProjectMembership.objects.get()
    assert lines["profile"] == membership.profile
    assert lines["created_user"] == "true"
    assert membership.admin and membership.access_policy == policy
    assert not membership.user.has_usable_password()


def test_invite_existing_user_keeps_password(project):
    user = UserFactory()
    data = run_json("medplum_invite", "--project", project.name, "--email", user.email.upper(),
                    "--first-name", "A", "--last-name", "B", "--profile-type", "RelatedPerson")
    assert data["created_user"] is False
    assert data["user_id"] == user.pk
    user.refresh_from_db()
    assert user.check_password(DEFAULT_PASSWORD)
    assert User.objects.count() == 1


def test_invite_duplicate_member(patient_membership):
    email = patient_membership.user.email
    assert_fails("medplum_invite", "--project", patient_membership.project.name, "--email", email,
                 "--first-name", "A", "--last-name", "B", "--profile-type", "Patient",
                 match=f"email: {email} is already a Patient member of this project.")


def test_invite_existing_user_with_password(project):
    user = UserFactory()
    assert_fails("medplum_invite", "--project", project.name, "--email", user.email, "--password", "An0ther-Pass!",
                 "--first-name", "A", "--last-name", "B", "--profile-type", "Patient",
                 match="password: A user with this email already exists; an invite does not change their password.")
    user.refresh_from_db()
    assert user.check_password(DEFAULT_PASSWORD)


def test_invite_invalid_email(project):
    assert_fails("medplum_invite", "--project", project.name, "--email", "not-an-email", "--first-name", "A",
                 "--last-name", "B", "--profile-type", "Patient", match="email: Enter a valid email address.")


def test_invite_weak_password(project):
    assert_fails("medplum_invite", "--project", project.name, *INVITE, "--profile-type", "Patient",
                 "--password", "123", match="password: This password is too short.")


def test_invite_bad_profile_type(project):
    assert_fails("medplum_invite", "--project", project.name, *INVITE, "--profile-type", "Doctor",
                 match="argument --profile-type: invalid choice: 'Doctor'")


def test_invite_unknown_project(db):
    assert_fails("medplum_invite", "--project", "Nope", *INVITE, "--profile-type", "Patient",
                 match="Unknown project 'Nope'")


def test_invite_unknown_access_policy(project):
    assert_fails("medplum_invite", "--project", project.name, *INVITE, "--profile-type", "Patient",
                 "--access-policy", "Nope", match="Unknown access policy 'Nope'")


# medplum_rotate_client_secret


def test_rotate_then_retire_client_secret(client_app, caplog):
    caplog.set_level("DEBUG")
    old = client_app.plaintext_secret
    old_digest = client_app.client_secret
    data = run_json("medplum_rotate_client_secret", "--client-id", client_app.client_id)
    new = data["client_secret"]
    assert data["client_id"] == str(client_app.client_id)
    assert new != old and len(new) == 64
    client_app.refresh_from_db()
    assert client_app.client_secret.startswith("hmac-sha256$") and new not in client_app.client_secret
    assert client_app.retiring_secret == old_digest
    assert client_app.secret_rotated_at is not None
    assert client_app.verify_secret(new)
    assert client_app.verify_secret(old)  # still valid while deployments switch over

    data = run_json("medplum_rotate_client_secret", "--client-id", client_app.client_id, "--retire")
    assert data == {"client_id": str(client_app.client_id), "retired": True}
    client_app.refresh_from_db()
    assert client_app.retiring_secret == ""
    assert client_app.verify_secret(new)
    assert not client_app.verify_secret(old)
    assert new not in caplog.text and old not in caplog.text


def test_rotate_client_secret_text(client_app):
    lines = run_text("medplum_rotate_client_secret", "--client-id", client_app.client_id)
    client_app.refresh_from_db()
    assert client_app.verify_secret(lines["client_secret"])
    assert lines["previous_secret_valid_until_retired"] == "true"


def test_rotate_client_secret_unknown_client(client_app):
    for extra in ((), ("--retire",)):
        assert_fails("medplum_rotate_client_secret", "--client-id", "nope", *extra, match="Unknown client 'nope'.")
    client_app.refresh_from_db()
    assert client_app.verify_secret(client_app.plaintext_secret)
    assert client_app.retiring_secret == ""


def test_rotate_client_secret_public_client(project):
    client = ClientApplicationFactory(project=project, public=True)
    assert_fails("medplum_rotate_client_secret", "--client-id", client.client_id,
                 match="is public and has no secret")
    client.refresh_from_db()
    assert client.client_secret == ""


# medplum_rotate_keys


@pytest.fixture
def active_key(db) -> SigningKey:
    return services.ensure_signing_key()


def test_rotate_keys_default_algorithm(active_key):
    data = run_json("medplum_rotate_keys")
    new = SigningKey.objects.get(kid=data["kid"])
    active_key.refresh_from_db()
    assert new.status == SigningKey.Status.ACTIVE
    assert data["algorithm"] == new.algorithm == "RS256"
    assert active_key.status == SigningKey.Status.INACTIVE
    assert data["published_kids"][0] == new.kid
    assert active_key.kid in data["published_kids"]


def test_rotate_keys_algorithm_then_retire(active_key):
    lines = run_text("medplum_rotate_keys", "--algorithm", "ES384")
    assert lines["algorithm"] == "ES384" and lines["status"] == "active"
    data = run_json("medplum_rotate_keys", f"--retire={active_key.kid}")
    active_key.refresh_from_db()
    assert data["retired"] is True and data["kid"] == active_key.kid
    assert active_key.status == SigningKey.Status.RETIRED and active_key.retired_at is not None
    assert active_key.kid not in data["published_kids"]
    assert lines["kid"] in data["published_kids"]
    # Retiring again changes nothing, not even the retirement time.
    retired_at = active_key.retired_at
    run_json("medplum_rotate_keys", f"--retire={active_key.kid}")
    active_key.refresh_from_db()
    assert active_key.retired_at == retired_at


def test_rotate_keys_retires_a_kid_that_begins_with_a_dash(active_key):
    """A kid is base64url: one in 64 begins with '-', which argparse takes for an option unless the
    operator writes --retire=KID, the form the help and README give (CI failed on such a kid)."""
    run_json("medplum_rotate_keys")
    SigningKey.objects.filter(pk=active_key.pk).update(kid="-" + active_key.kid[1:])
    assert_fails("medplum_rotate_keys", "--retire", "-" + active_key.kid[1:], match="expected one argument")
    data = run_json("medplum_rotate_keys", f"--retire=-{active_key.kid[1:]}")
    assert data["retired"] is True and data["kid"] == "-" + active_key.kid[1:]
    assert SigningKey.objects.get(pk=active_key.pk).status == SigningKey.Status.RETIRED


def test_rotate_keys_retiring_active_key(active_key):
    assert_fails("medplum_rotate_keys", f"--retire={active_key.kid}",
                 match="The active signing key cannot be retired; rotate first.")
    active_key.refresh_from_db()
    assert active_key.status == SigningKey.Status.ACTIVE


def test_rotate_keys_unknown_kid(active_key):
    assert_fails("medplum_rotate_keys", "--retire=nope", match="No signing key with kid 'nope'.")


def test_rotate_keys_bad_arguments(active_key):
    assert_fails("medplum_rotate_keys", "--algorithm", "HS256", match="invalid choice: 'HS256'")
    assert_fails("medplum_rotate_keys", "--algorithm", "ES256", f"--retire={active_key.kid}",
                 match="either --algorithm (rotate) or --retire=KID, not both")


# medplum_seed_demo


@pytest.mark.django_db
def test_seed_demo_creates_everything():
    data = run_json("medplum_seed_demo")
    assert set(data["created"]) == {"admin", "project", "access_policy", "default_access_policy",
                                    "medplum-demo-public", "medplum-demo-confidential", "practitioner", "patient"}
    admin = User.objects.get(username="admin@example.com")
    assert admin.is_superuser and admin.is_staff and admin.check_password("Demo-Admin-2026!")
    assert data["admin"] == {"email": "admin@example.com", "username": "admin@example.com",
                             "password": "Demo-Admin-2026!", "role": ROLES["admin"]}
    assert "superuser" in data["admin"]["role"] and "Project Admin" in data["practitioner"]["role"]
    assert "only their own record" in data["patient"]["role"]

    project = Project.objects.get(name="Demo Project")
    assert project.owner == admin
    policy = AccessPolicy.objects.get(project=project, name="Patient compartment")
    assert {"resourceType": "Patient", "criteria": "Patient?_id=%patient.id",
            "interaction": ["read", "search"]} in policy.resources
    assert {rule["resourceType"] for rule in policy.resources} == {
        "Patient", "Observation", "Condition", "AllergyIntolerance", "MedicationRequest", "Immunization",
        "Encounter", "DiagnosticReport", "DocumentReference"}
    assert all(rule["interaction"] == ["read", "search"] and "%patient" in rule["criteria"]
               for rule in policy.resources)
    assert DefaultAccessPolicy.objects.get(project=project, profile_type="Patient").access_policy == policy

    public = ClientApplication.objects.get(client_id="medplum-demo-public")
    confidential = ClientApplication.objects.get(client_id="medplum-demo-confidential")
    assert public.client_type == ClientApplication.CLIENT_PUBLIC and public.client_secret == ""
    assert public.redirect_uri_list == confidential.redirect_uri_list == ["http://127.0.0.1:8888/callback"]
    # The demo client app (examples/demo_client) signs out and is launched there too.
    assert public.post_logout_redirect_uris == "http://127.0.0.1:8888/signed-out"
    assert public.launch_uri == "http://127.0.0.1:8888/launch"
    assert data["public_client"]["launch_uri"] == public.launch_uri
    assert confidential.launch_uri == "" and confidential.post_logout_redirect_uris == ""
    secret = data["confidential_client"]["client_secret"]
    assert confidential.client_secret.startswith("hmac-sha256$") and confidential.verify_secret(secret)

    practitioner = ProjectMembership.objects.get(project=project, profile_type="Practitioner")
    assert practitioner.admin and practitioner.user.email == "practitioner@example.com"
    assert practitioner.user.check_password("Demo-Practitioner-2026!")
    assert data["practitioner"]["profile"] == practitioner.profile
    patient = ProjectMembership.objects.get(project=project, profile_type="Patient")
    assert patient.access_policy == policy and not patient.admin
    assert patient.user.check_password("Demo-Patient-2026!")
    assert data["patient"] == {"email": "patient@example.com", "password": "Demo-Patient-2026!",
                               "profile": patient.profile, "admin": False, "role": ROLES["patient"]}
    # fhir_api adds the demo patient's clinical data through medplum_auth.signals.demo_seeded.
    assert data["demo_data"]["fhir"]["created"] == 5
    assert SigningKey.objects.filter(kid=data["signing_key"], status=SigningKey.Status.ACTIVE).exists()


@pytest.mark.django_db
def test_seed_demo_gives_an_older_public_client_the_demo_client_uris():
    run_json("medplum_seed_demo")
    public = ClientApplication.objects.get(client_id="medplum-demo-public")
    ClientApplication.objects.filter(pk=public.pk).update(launch_uri="", post_logout_redirect_uris="")
    data = run_json("medplum_seed_demo")
    public.refresh_from_db()
    assert data["created"] == ["medplum-demo-public demo client URIs"]
    assert (public.launch_uri, public.post_logout_redirect_uris) == (
        "http://127.0.0.1:8888/launch", "http://127.0.0.1:8888/signed-out")
    assert run_json("medplum_seed_demo")["created"] == []


@pytest.mark.django_db
def test_seed_demo_twice_is_idempotent():
    first = run_json("medplum_seed_demo")
    secret = first["confidential_client"]["client_secret"]
    counts = row_counts()
    second = run_json("medplum_seed_demo")
    assert row_counts() == counts
    assert second["created"] == []
    assert second["demo_data"]["fhir"]["created"] == 0
    assert "client_secret" not in second["confidential_client"]
    assert second["confidential_client"]["rotate_command"] == (
        "python manage.py medplum_rotate_client_secret --client-id medplum-demo-confidential")
    assert second["project"] == first["project"] and second["patient"] == first["patient"]

    out = io.StringIO()
    call_command("medplum_seed_demo", stdout=out)
    text = out.getvalue()
    assert row_counts() == counts
    assert secret not in text
    assert "confidential_client.client_secret_status: unchanged" in text
    assert "medplum_rotate_client_secret --client-id medplum-demo-confidential" in text
    assert ClientApplication.objects.get(client_id="medplum-demo-confidential").verify_secret(secret)


@pytest.mark.django_db
def test_seed_demo_reuses_existing_user_without_changing_password():
    user = UserFactory(username="patient@example.com", email="patient@example.com")
    data = run_json("medplum_seed_demo")
    user.refresh_from_db()
    assert user.check_password(DEFAULT_PASSWORD)
    assert data["patient"]["password"] is None  # not the demo password, so not printed
    assert ProjectMembership.objects.get(profile_type="Patient").user == user


@pytest.mark.django_db
def test_seed_demo_is_one_transaction(monkeypatch):
    def fail(*args: Any, **kwargs: Any) -> None:
        raise ValidationError({"email": ["boom"]})

    # The patient is invited last: everything before it must be rolled back too.
    real_invite = services.invite_member
    monkeypatch.setattr(services, "invite_member",
                        lambda project, email, **kw: fail() if kw["profile_type"] == "Patient"
                        else real_invite(project, email, **kw))
    assert_fails("medplum_seed_demo", match="email: boom")


# Command line: exit status and stderr


def test_command_line_exit_status_and_stderr(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}"}

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)

    assert manage("migrate", "-v", "0").returncode == 0
    created = manage("medplum_create_project", "--name", "CLI", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["name"] == "CLI"  # stdout is one JSON object; logs go to stderr

    failed = manage("medplum_create_client", "--project", "Nope", "--name", "X",
                    "--redirect-uri", "https://a.example.org/cb", "--json")
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert "CommandError: Unknown project 'Nope'" in failed.stderr

    bad_uri = manage("medplum_create_client", "--project", "CLI", "--name", "X", "--redirect-uri", "http://evil.test/cb")
    assert bad_uri.returncode == 1
    assert "redirect_uris: Redirect URI 'http://evil.test/cb' must use https" in bad_uri.stderr

    with sqlite3.connect(tmp_path / "cli.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM medplum_auth_clientapplication").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM medplum_auth_project").fetchone() == (1,)


def test_readme_demo_section_lists_the_accounts_the_seed_prints():
    from medplum_auth.management.commands import medplum_seed_demo as demo

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines()
            if line.startswith("| `") and "@example.com" in line}
    accounts = [(demo.ADMIN_EMAIL, demo.ADMIN_PASSWORD, "superuser"),
                (demo.PRACTITIONER["email"], demo.PRACTITIONER["password"], "Practitioner and admin"),
                (demo.PATIENT["email"], demo.PATIENT["password"], "only their own record")]
    for email, password, role in accounts:
        row = next(line for key, line in rows.items() if key.startswith(f"`{email}`"))
        assert f"`{password}`" in row and role in row, row
    flat = " ".join(readme.split())
    assert "3 Observations" in flat and "2 Conditions" in flat
