from __future__ import annotations

import json
import logging
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.test import override_settings

from medplum_auth import keys, services
from medplum_auth.models import (
    AccessPolicy,
    ClientApplication,
    DefaultAccessPolicy,
    Project,
    ProjectMembership,
    SigningKey,
)
from medplum_auth.signals import member_invited
from tests.factories import DEFAULT_PASSWORD, AccessPolicyFactory, ProjectFactory, UserFactory, client_secret_digest

pytestmark = pytest.mark.django_db

User = get_user_model()
HTTPS_ONLY = "must use https (http is allowed only for localhost, 127.0.0.1 and [::1])."
READ_ONLY = ["read", "vread", "history", "search"]


@pytest.fixture
def invited():
    """Collects ``member_invited`` sends."""
    calls: list[dict] = []

    def receiver(sender, **kwargs):
        calls.append({"sender": sender, **kwargs})

    member_invited.connect(receiver)
    yield calls
    member_invited.disconnect(receiver)


def _invite(project, email="new.member@example.org", **kwargs):
    kwargs.setdefault("profile_type", "Patient")
    kwargs.setdefault("first_name", "Ada")
    kwargs.setdefault("last_name", "Lovelace")
    return services.invite_member(project, email, **kwargs)


# --- projects ---------------------------------------------------------------------------------


def test_create_project():
    owner = UserFactory()
    project = services.create_project("  Clinic  ", description="Main clinic", owner=owner)
    row = Project.objects.get(pk=project.pk)
    assert (row.name, row.description, row.owner, row.active) == ("Clinic", "Main clinic", owner, True)


@pytest.mark.parametrize("name", ["", "   ", None])
def test_create_project_needs_a_name(name):
    before = Project.objects.count()
    with pytest.raises(ValidationError) as exc:
        services.create_project(name)
    assert exc.value.message_dict == {"name": ["This field cannot be blank."]}
    assert Project.objects.count() == before


def test_create_project_name_is_unique():
    services.create_project("Clinic")
    with pytest.raises(ValidationError) as exc:
        services.create_project("Clinic")
    assert exc.value.message_dict == {"name": ["Project with this Name already exists."]}
    assert Project.objects.filter(name="Clinic").count() == 1


# --- clients ----------------------------------------------------------------------------------


@pytest.mark.spec("RFC 6749 §2.3.1")
def test_create_confidential_client_returns_secret_once(project):
    client, secret = services.create_client(project, " Portal ", redirect_uris=["https://app.example.org/cb"],
                                            description="Patient portal")
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    row = ClientApplication.objects.get(pk=client.pk)
    assert row.name == "Portal"
    assert row.description == "Patient portal"
    assert row.project == project
    assert row.client_type == ClientApplication.CLIENT_CONFIDENTIAL
    assert row.client_secret == client_secret_digest(secret)
    assert row.retiring_secret == ""
    assert row.redirect_uris == "https://app.example.org/cb"
    assert row.verify_secret(secret)
    assert not hasattr(client, "plaintext_secret")


def test_plaintext_secret_is_in_no_column(project):
    client, secret = services.create_client(project, "Portal", redirect_uris="https://app.example.org/cb")
    row = ClientApplication.objects.filter(pk=client.pk).values().get()
    assert row  # the loop below must see the columns
    for column, value in row.items():
        assert secret not in str(value), column


def test_create_public_client_has_no_secret(project):
    client, secret = services.create_client(project, "SPA", redirect_uris="http://localhost:3000/cb", public=True)
    assert secret is None
    row = ClientApplication.objects.get(pk=client.pk)
    assert row.client_type == ClientApplication.CLIENT_PUBLIC
    assert row.client_secret == ""
    assert row.pkce_optional is False


def test_each_client_gets_its_own_secret(project):
    _, one = services.create_client(project, "One")
    _, two = services.create_client(project, "Two")
    assert one != two


def test_create_client_normalises_redirect_uris(project):
    client, _ = services.create_client(
        project, "Portal",
        redirect_uris="https://a.example.org/cb\r\nhttps://b.example.org/cb\nhttps://a.example.org/cb",
    )
    assert ClientApplication.objects.get(pk=client.pk).redirect_uris == "https://a.example.org/cb\nhttps://b.example.org/cb"


def test_create_client_sets_other_fields(project, policy):
    client, _ = services.create_client(
        project, "Portal", access_policy=policy, launch_uri="https://app.example.org/launch",
        allowed_origins="https://app.example.org", access_token_lifetime=600, pkce_optional=True,
    )
    row = ClientApplication.objects.get(pk=client.pk)
    assert (row.access_policy, row.launch_uri, row.allowed_origins, row.access_token_lifetime, row.pkce_optional) == (
        policy, "https://app.example.org/launch", "https://app.example.org", 600, True)


@pytest.mark.spec("RFC 6749 §3.1.2")
def test_bad_redirect_uris_create_nothing(project):
    with pytest.raises(ValidationError) as exc:
        services.create_client(project, "Portal",
                               redirect_uris=["http://app.example.org/cb", "https://app.example.org/cb#x"])
    assert exc.value.message_dict == {"redirect_uris": [
        f"Redirect URI 'http://app.example.org/cb' {HTTPS_ONLY}",
        "Redirect URI 'https://app.example.org/cb#x' must not contain a fragment (#…).",
    ]}
    assert not ClientApplication.objects.filter(project=project).exists()


@pytest.mark.parametrize("name", ["", "  ", None])
def test_client_name_required(project, name):
    with pytest.raises(ValidationError) as exc:
        services.create_client(project, name)
    assert exc.value.message_dict == {"name": ["Client name is required."]}
    assert not ClientApplication.objects.filter(project=project).exists()


def test_client_policy_of_another_project_refused(project):
    foreign = AccessPolicyFactory(project=ProjectFactory())
    with pytest.raises(ValidationError) as exc:
        services.create_client(project, "Portal", access_policy=foreign)
    assert exc.value.message_dict == {"access_policy": ["The access policy belongs to another project."]}
    assert not ClientApplication.objects.filter(project=project).exists()


@pytest.mark.spec("RFC 9700 §2.1.1")
def test_public_client_without_pkce_refused(project):
    with pytest.raises(ValidationError) as exc:
        services.create_client(project, "SPA", public=True, pkce_optional=True)
    assert exc.value.message_dict == {"pkce_optional": ["Public clients must use PKCE."]}
    assert not ClientApplication.objects.filter(project=project).exists()


@pytest.mark.spec("RFC 6749 §2.3.1")
def test_rotate_client_secret_keeps_the_old_one_retiring(project):
    client, first = services.create_client(project, "Portal")
    second = services.rotate_client_secret(client)
    assert second != first
    row = ClientApplication.objects.get(pk=client.pk)
    assert row.client_secret == client_secret_digest(second)
    assert row.retiring_secret == client_secret_digest(first)
    assert row.secret_rotated_at is not None
    assert row.verify_secret(first) and row.verify_secret(second)
    # The caller's instance sees the rotation too.
    assert client.verify_secret(second)
    assert client.secret_rotated_at == row.secret_rotated_at

    third = services.rotate_client_secret(client)
    row = ClientApplication.objects.get(pk=client.pk)
    assert row.verify_secret(first) is False
    assert row.verify_secret(second) is True
    assert row.verify_secret(third) is True


def test_saving_the_instance_after_rotation_keeps_the_new_secret(project):
    client, _ = services.create_client(project, "Portal")
    new = services.rotate_client_secret(client)
    client.description = "edited after rotation"
    client.save()
    assert ClientApplication.objects.get(pk=client.pk).verify_secret(new)


def test_rotate_public_client_refused(project):
    client, _ = services.create_client(project, "SPA", public=True)
    with pytest.raises(ValidationError) as exc:
        services.rotate_client_secret(client)
    assert exc.value.code == "public_client"
    assert exc.value.messages == ["Public clients have no secret."]
    row = ClientApplication.objects.get(pk=client.pk)
    assert (row.client_secret, row.retiring_secret, row.secret_rotated_at) == ("", "", None)


def test_retire_client_secret(project):
    client, old = services.create_client(project, "Portal")
    new = services.rotate_client_secret(client)
    services.retire_client_secret(client)
    assert client.retiring_secret == ""
    row = ClientApplication.objects.get(pk=client.pk)
    assert row.retiring_secret == ""
    assert row.verify_secret(old) is False
    assert row.verify_secret(new) is True


# --- access policies ----------------------------------------------------------------------------


def test_create_access_policy_normalises_rules(project):
    policy = services.create_access_policy(project, " Patients ", [{"resourceType": "Patient", "readonly": True}],
                                           description="Read patients")
    row = AccessPolicy.objects.get(pk=policy.pk)
    assert row.name == "Patients"
    assert row.description == "Read patients"
    assert row.resources == [{"resourceType": "Patient", "interaction": READ_ONLY}]


def test_create_access_policy_from_json(project):
    text = json.dumps({"resourceType": "AccessPolicy", "resource": [
        {"resourceType": "Observation", "criteria": "Observation?subject=%patient", "interaction": ["search", "read"]},
    ]})
    policy = services.create_access_policy(project, "Observations", text)
    assert AccessPolicy.objects.get(pk=policy.pk).resources == [
        {"resourceType": "Observation", "criteria": "Observation?subject=%patient", "interaction": ["read", "search"]},
    ]


@pytest.mark.parametrize(("rules", "messages"), [
    ([{"resourceType": "Patient", "bad": 1}], ["Rule 1: unknown key(s) bad."]),
    ("[not json", None),
    ({"resourceType": "Patient"}, ["Access policy must be a list of rules."]),
])
def test_invalid_access_policy_saves_nothing(project, rules, messages):
    with pytest.raises(ValidationError) as exc:
        services.create_access_policy(project, "Bad", rules)
    if messages is not None:
        assert exc.value.messages == messages
    assert not AccessPolicy.objects.filter(project=project).exists()


def test_access_policy_name_unique_per_project(project):
    rules = [{"resourceType": "Patient"}]
    services.create_access_policy(project, "Patients", rules)
    with pytest.raises(ValidationError) as exc:
        services.create_access_policy(project, " Patients", rules)
    assert exc.value.messages == ["Access policy with this Project and Name already exists."]
    assert AccessPolicy.objects.filter(project=project).count() == 1
    services.create_access_policy(ProjectFactory(), "Patients", rules)


def test_update_access_policy(project):
    policy = services.create_access_policy(project, "Patients", [{"resourceType": "Patient"}])
    services.update_access_policy(policy, name="Readers", rules='[{"resourceType": "Patient", "readonly": true}]',
                                  description="now read-only")
    row = AccessPolicy.objects.get(pk=policy.pk)
    assert (row.name, row.description, row.resources) == (
        "Readers", "now read-only", [{"resourceType": "Patient", "interaction": READ_ONLY}])


def test_update_access_policy_leaves_unnamed_fields_alone(project):
    policy = services.create_access_policy(project, "Patients", [{"resourceType": "Patient"}], description="d")
    services.update_access_policy(policy, rules=[{"resourceType": "Observation", "readonly": True}])
    row = AccessPolicy.objects.get(pk=policy.pk)
    assert (row.name, row.description, row.resources) == (
        "Patients", "d", [{"resourceType": "Observation", "interaction": READ_ONLY}])


@pytest.mark.parametrize("changes", [
    {"rules": [{"resourceType": "Patient", "interaction": ["patch"]}]},
    {"rules": "{"},
    {"name": "   ", "rules": [{"resourceType": "Observation"}]},
    {"name": "Taken", "description": "changed"},
])
def test_invalid_update_changes_nothing(project, changes):
    services.create_access_policy(project, "Taken", [{"resourceType": "Patient"}])
    policy = services.create_access_policy(project, "Patients", [{"resourceType": "Patient"}], description="d")
    original = [{"resourceType": "Patient", "interaction": list(services.policies.INTERACTIONS)}]
    with pytest.raises(ValidationError):
        services.update_access_policy(policy, **changes)
    row = AccessPolicy.objects.get(pk=policy.pk)
    assert (row.name, row.description, row.resources) == ("Patients", "d", original)
    # The instance is reloaded too, so a later save() cannot write the rejected values.
    assert (policy.name, policy.description, policy.resources) == ("Patients", "d", original)


def test_set_default_access_policy(project):
    first = AccessPolicyFactory(project=project)
    second = AccessPolicyFactory(project=project)
    services.set_default_access_policy(project, "Patient", first)
    services.set_default_access_policy(project, "Patient", second)
    assert list(DefaultAccessPolicy.objects.filter(project=project).values_list("profile_type", "access_policy")) == [
        ("Patient", second.pk)]
    assert services.set_default_access_policy(project, "Patient", None) is None
    assert not DefaultAccessPolicy.objects.filter(project=project).exists()


def test_set_default_access_policy_of_another_project_refused(project):
    with pytest.raises(ValidationError) as exc:
        services.set_default_access_policy(project, "Patient", AccessPolicyFactory(project=ProjectFactory()))
    assert exc.value.message_dict == {"access_policy": ["The access policy belongs to another project."]}
    assert not DefaultAccessPolicy.objects.filter(project=project).exists()


# --- invitations ------------------------------------------------------------------------------


def test_invite_creates_user_with_password_and_membership(project, invited):
    invitation = _invite(project, "  New.Member@Example.org ", password=DEFAULT_PASSWORD, admin=True,
                         first_name=" Ada ", last_name=" Lovelace ")
    user = User.objects.get(pk=invitation.user.pk)
    assert invitation.created_user is True
    assert (user.email, user.username, user.first_name, user.last_name) == (
        "new.member@example.org", "new.member@example.org", "Ada", "Lovelace")
    assert user.has_usable_password()
    assert user.check_password(DEFAULT_PASSWORD)
    membership = ProjectMembership.objects.get(pk=invitation.membership.pk)
    assert (membership.project, membership.user, membership.profile_type, membership.profile_display,
            membership.admin, membership.access_policy, membership.access_parameters) == (
        project, user, "Patient", "Ada Lovelace", True, None, {})
    assert membership.profile == f"Patient/{membership.profile_id}"
    assert len(invited) == 1


def test_invite_without_password_leaves_it_unusable(project):
    invitation = _invite(project)
    user = User.objects.get(pk=invitation.user.pk)
    assert not user.has_usable_password()
    assert not user.check_password("")


def test_existing_user_is_reused_across_projects(project):
    first = _invite(project, password=DEFAULT_PASSWORD)
    other = ProjectFactory()
    second = _invite(other, "NEW.MEMBER@example.org", profile_type="Practitioner", first_name="Dr", last_name="Ada")
    assert second.created_user is False
    assert second.user.pk == first.user.pk
    assert User.objects.filter(email__iexact="new.member@example.org").count() == 1
    assert ProjectMembership.objects.filter(user=first.user).count() == 2
    assert User.objects.get(pk=first.user.pk).check_password(DEFAULT_PASSWORD)  # untouched
    assert second.membership.profile_display == "Dr Ada"


def test_email_match_is_case_insensitive(project):
    existing = UserFactory(username="Grace@Example.ORG", email="Grace@Example.ORG")
    invitation = _invite(project, "grace@example.org")
    assert invitation.user.pk == existing.pk
    assert invitation.created_user is False
    # An invite does not rename an existing user.
    assert User.objects.get(pk=existing.pk).first_name == existing.first_name


def test_same_user_can_hold_two_profile_types_in_a_project(project):
    _invite(project, profile_type="Patient")
    _invite(project, profile_type="Practitioner")
    assert ProjectMembership.objects.filter(project=project).count() == 2


def test_duplicate_member_refused(project):
    _invite(project)
    with pytest.raises(ValidationError) as exc:
        _invite(project, "New.Member@example.org")
    assert exc.value.message_dict == {"email": ["new.member@example.org is already a Patient member of this project."]}
    assert ProjectMembership.objects.filter(project=project).count() == 1


def test_password_for_existing_user_refused(project):
    user = UserFactory(email="known@example.org", username="known@example.org")
    with pytest.raises(ValidationError) as exc:
        _invite(project, "known@example.org", password="another strong passphrase 42")
    assert exc.value.message_dict == {"password": [
        "A user with this email already exists; an invite does not change their password."]}
    assert User.objects.get(pk=user.pk).check_password(DEFAULT_PASSWORD)
    assert not ProjectMembership.objects.filter(project=project).exists()


@pytest.mark.parametrize(("password", "message"), [
    ("password", "This password is too common."),
    ("8392", "This password is too short. It must contain at least 8 characters."),
    ("58302946175", "This password is entirely numeric."),
    ("new.member@example.org", "The password is too similar to the username."),
])
def test_weak_password_refused(project, password, message):
    with pytest.raises(ValidationError) as exc:
        _invite(project, password=password)
    assert message in exc.value.message_dict["password"]
    assert not User.objects.filter(email="new.member@example.org").exists()


@pytest.mark.parametrize("email", ["", "not-an-email", "a@b", "two@example.org three@example.org"])
def test_invalid_email_refused(project, email):
    with pytest.raises(ValidationError) as exc:
        _invite(project, email)
    assert exc.value.message_dict == {"email": ["Enter a valid email address."]}
    assert not ProjectMembership.objects.filter(project=project).exists()


def test_every_invite_field_error_is_reported(project):
    with pytest.raises(ValidationError) as exc:
        _invite(project, "bad", profile_type="Device", first_name=" ", last_name="")
    assert exc.value.message_dict == {
        "email": ["Enter a valid email address."],
        "profile_type": ["Profile type must be Patient, Practitioner or RelatedPerson."],
        "first_name": ["First name is required."],
        "last_name": ["Last name is required."],
    }


def test_username_taken_by_another_email_refused(project):
    UserFactory(username="taken@example.org", email="someone.else@example.org")
    with pytest.raises(ValidationError) as exc:
        _invite(project, "taken@example.org")
    assert exc.value.message_dict == {"email": ["A user with this username already exists."]}


def test_default_policy_of_the_project_applies(project):
    patients = AccessPolicyFactory(project=project)
    DefaultAccessPolicy.objects.create(project=project, profile_type="Patient", access_policy=patients)
    DefaultAccessPolicy.objects.create(project=ProjectFactory(), profile_type="Practitioner",
                                       access_policy=AccessPolicyFactory())
    assert _invite(project, "p@example.org").membership.access_policy == patients
    # No default for this type in this project: full access (Medplum's legacy default).
    assert _invite(project, "dr@example.org", profile_type="Practitioner").membership.access_policy is None
    explicit = AccessPolicyFactory(project=project)
    assert _invite(project, "x@example.org", access_policy=explicit).membership.access_policy == explicit


def test_invite_policy_of_another_project_rolls_back(project):
    with pytest.raises(ValidationError) as exc:
        _invite(project, access_policy=AccessPolicyFactory(project=ProjectFactory()))
    assert exc.value.message_dict == {"access_policy": ["The access policy belongs to another project."]}
    assert not User.objects.filter(email="new.member@example.org").exists()


def test_invite_access_parameters(project):
    invitation = _invite(project, access_parameters={"organization": "Organization/o1"})
    membership = ProjectMembership.objects.get(pk=invitation.membership.pk)
    assert membership.access_parameters == {"organization": "Organization/o1"}
    assert membership.policy_parameters()["organization"] == "Organization/o1"
    with pytest.raises(ValidationError) as exc:
        _invite(project, "other@example.org", access_parameters={"organization": 1})
    assert exc.value.message_dict == {"access_parameters": ["Parameters must map names to strings."]}
    assert not User.objects.filter(email="other@example.org").exists()


def test_member_invited_signal(project, invited):
    invitation = _invite(project, first_name=" Ada ")
    assert len(invited) == 1
    call = invited[0]
    assert call["sender"] is ProjectMembership
    assert call["membership"] == invitation.membership
    assert call["user"] == invitation.user
    assert (call["created_user"], call["first_name"], call["last_name"]) == (True, "Ada", "Lovelace")
    _invite(ProjectFactory())
    assert invited[1]["created_user"] is False


def test_failing_signal_receiver_rolls_the_invite_back(project):
    def receiver(sender, **kwargs):
        raise RuntimeError("profile resource could not be created")

    member_invited.connect(receiver)
    try:
        with pytest.raises(RuntimeError):
            _invite(project, password=DEFAULT_PASSWORD)
    finally:
        member_invited.disconnect(receiver)
    assert not User.objects.filter(email="new.member@example.org").exists()
    assert not ProjectMembership.objects.filter(project=project).exists()


# --- signing keys -----------------------------------------------------------------------------


def test_rotate_and_retire_signing_keys():
    old = services.ensure_signing_key()
    new = services.rotate_signing_keys()
    old.refresh_from_db()
    assert old.status == SigningKey.Status.INACTIVE
    assert new.status == SigningKey.Status.ACTIVE
    assert keys.get_active_key() == new
    kids = [k["kid"] for k in keys.jwks()["keys"]]
    assert new.kid in kids and old.kid in kids  # tokens signed by the old key still verify

    retired = services.retire_signing_key(old.kid)
    assert retired.status == SigningKey.Status.RETIRED
    assert retired.retired_at is not None
    assert SigningKey.objects.get(pk=old.pk).status == SigningKey.Status.RETIRED
    kids = [k["kid"] for k in keys.jwks()["keys"]]
    assert old.kid not in kids and new.kid in kids


def test_rotate_uses_configured_or_given_algorithm():
    with override_settings(MEDPLUM_AUTH={"SIGNING_ALGORITHM": "ES384"}):
        row = services.rotate_signing_keys()
    assert (row.algorithm, row.public_jwk["crv"], row.public_jwk["alg"]) == ("ES384", "P-384", "ES384")
    row = services.rotate_signing_keys("ES256")
    assert (row.algorithm, row.public_jwk["crv"]) == ("ES256", "P-256")
    assert row.kid == row.public_jwk["kid"]
    assert SigningKey.objects.filter(status=SigningKey.Status.ACTIVE).count() == 1


def test_active_key_cannot_be_retired():
    active = services.ensure_signing_key()
    with pytest.raises(ValidationError) as exc:
        services.retire_signing_key(active.kid)
    assert exc.value.code == "active_key"
    assert exc.value.messages == ["The active signing key cannot be retired; rotate first."]
    assert SigningKey.objects.get(pk=active.pk).status == SigningKey.Status.ACTIVE


def test_retire_unknown_kid():
    with pytest.raises(ValidationError) as exc:
        services.retire_signing_key("no-such-kid")
    assert exc.value.code == "unknown_kid"
    assert exc.value.messages == ["No signing key with kid 'no-such-kid'."]


def test_retiring_twice_keeps_the_first_timestamp():
    old = services.ensure_signing_key()
    services.rotate_signing_keys()
    first = services.retire_signing_key(old.kid).retired_at
    again = services.retire_signing_key(old.kid)
    assert again.status == SigningKey.Status.RETIRED
    assert SigningKey.objects.get(pk=old.pk).retired_at == first


def test_ensure_signing_key():
    existing = services.ensure_signing_key()
    assert services.ensure_signing_key() == existing
    SigningKey.objects.all().delete()
    created = services.ensure_signing_key()
    assert created.status == SigningKey.Status.ACTIVE
    assert SigningKey.objects.count() == 1
    assert services.ensure_signing_key() == created
    assert SigningKey.objects.count() == 1


# --- audit log --------------------------------------------------------------------------------


def test_audit_log_never_contains_secrets(project, caplog):
    caplog.set_level(logging.INFO, logger="medplum_auth.audit")
    client, secret = services.create_client(project, "Portal")
    rotated = services.rotate_client_secret(client)
    services.retire_client_secret(client)
    invitation = _invite(project, password=DEFAULT_PASSWORD)
    key = services.rotate_signing_keys("ES256")
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "medplum_auth.audit")
    # The lines are there and identify what happened ...
    assert f"client created client_id={client.client_id} project={project.id}" in text
    assert f"client secret rotated client_id={client.client_id}" in text
    assert f"client retiring secret removed client_id={client.client_id}" in text
    assert f"member invited membership={invitation.membership.id}" in text
    assert f"signing key rotated kid={key.kid} alg=ES256" in text
    # ... but never what was secret.
    for value in (secret, rotated, client_secret_digest(secret), client_secret_digest(rotated), DEFAULT_PASSWORD,
                  key.private_key):
        assert value not in text
