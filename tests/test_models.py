from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError

from medplum_auth.models import (
    AccessPolicy,
    ClientApplication,
    DefaultAccessPolicy,
    Project,
    ProjectMembership,
    SigningKey,
)
from medplum_auth.secrets import generate_client_secret
from tests.factories import (
    AccessPolicyFactory,
    ClientApplicationFactory,
    MembershipFactory,
    ProjectFactory,
    UserFactory,
    client_secret_digest,
)

pytestmark = pytest.mark.django_db


def _signing_key(kid: str, status: str) -> SigningKey:
    return SigningKey.objects.create(kid=kid, algorithm="ES256", status=status, private_key="x",
                                     public_jwk={"kid": kid})


# --- constraints -------------------------------------------------------------------------------


def test_project_name_is_unique():
    ProjectFactory(name="Clinic")
    with pytest.raises(IntegrityError), transaction.atomic():
        ProjectFactory(name="Clinic")
    with pytest.raises(ValidationError) as exc:
        Project(name="Clinic").full_clean()
    assert list(exc.value.message_dict) == ["name"]


def test_policy_name_is_unique_per_project(project):
    AccessPolicyFactory(project=project, name="Patients")
    AccessPolicyFactory(project=ProjectFactory(), name="Patients")  # same name, other project: fine
    with pytest.raises(IntegrityError), transaction.atomic():
        AccessPolicyFactory(project=project, name="Patients")
    assert AccessPolicy.objects.filter(name="Patients").count() == 2


def test_membership_profile_is_unique_per_project(project):
    first = MembershipFactory(project=project, profile_type="Patient")
    MembershipFactory(project=ProjectFactory(), profile_type="Patient", profile_id=first.profile_id)
    MembershipFactory(project=project, profile_type="Practitioner", profile_id=first.profile_id)
    with pytest.raises(IntegrityError), transaction.atomic():
        MembershipFactory(project=project, profile_type="Patient", profile_id=first.profile_id)


def test_membership_user_has_one_profile_per_type_in_a_project(project):
    user = UserFactory()
    MembershipFactory(project=project, user=user, profile_type="Patient")
    MembershipFactory(project=project, user=user, profile_type="Practitioner")
    MembershipFactory(project=ProjectFactory(), user=user, profile_type="Patient")
    with pytest.raises(IntegrityError), transaction.atomic():
        MembershipFactory(project=project, user=user, profile_type="Patient")
    assert ProjectMembership.objects.filter(user=user).count() == 3


def test_membership_constraints_reported_by_full_clean(project):
    user = UserFactory()
    MembershipFactory(project=project, user=user, profile_type="Patient")
    duplicate = ProjectMembership(project=project, user=user, profile_type="Patient")
    with pytest.raises(ValidationError):
        duplicate.full_clean()


def test_only_one_active_signing_key():
    SigningKey.objects.all().delete()
    _signing_key("a", SigningKey.Status.ACTIVE)
    _signing_key("b", SigningKey.Status.INACTIVE)
    _signing_key("c", SigningKey.Status.INACTIVE)
    _signing_key("d", SigningKey.Status.RETIRED)
    with pytest.raises(IntegrityError), transaction.atomic():
        _signing_key("e", SigningKey.Status.ACTIVE)
    with pytest.raises(IntegrityError), transaction.atomic():
        SigningKey.objects.filter(kid="b").update(status=SigningKey.Status.ACTIVE)
    assert list(SigningKey.objects.filter(status="active").values_list("kid", flat=True)) == ["a"]


def test_signing_key_kid_is_unique():
    _signing_key("same", SigningKey.Status.INACTIVE)
    with pytest.raises(IntegrityError), transaction.atomic():
        _signing_key("same", SigningKey.Status.RETIRED)


def test_default_policy_is_unique_per_profile_type(project, policy):
    DefaultAccessPolicy.objects.create(project=project, profile_type="Patient", access_policy=policy)
    DefaultAccessPolicy.objects.create(project=project, profile_type="Practitioner", access_policy=policy)
    with pytest.raises(IntegrityError), transaction.atomic():
        DefaultAccessPolicy.objects.create(project=project, profile_type="Patient",
                                           access_policy=AccessPolicyFactory(project=project))


# --- deletion --------------------------------------------------------------------------------


def test_policy_used_by_a_client_is_protected(project, policy):
    ClientApplicationFactory(project=project, access_policy=policy)
    with pytest.raises(ProtectedError):
        policy.delete()
    assert AccessPolicy.objects.filter(pk=policy.pk).exists()


def test_policy_used_by_a_membership_is_protected(project, policy):
    MembershipFactory(project=project, access_policy=policy)
    with pytest.raises(ProtectedError):
        policy.delete()
    assert AccessPolicy.objects.filter(pk=policy.pk).exists()


def test_policy_used_as_default_is_protected(project, policy):
    DefaultAccessPolicy.objects.create(project=project, profile_type="Patient", access_policy=policy)
    with pytest.raises(ProtectedError):
        policy.delete()


def test_unused_policy_can_be_deleted(policy):
    policy.delete()
    assert not AccessPolicy.objects.filter(pk=policy.pk).exists()


def test_project_with_clients_or_members_is_protected(project):
    ClientApplicationFactory(project=project)
    with pytest.raises(ProtectedError):
        project.delete()
    other = ProjectFactory()
    MembershipFactory(project=other)
    with pytest.raises(ProtectedError):
        other.delete()


def test_deleting_a_user_removes_their_memberships(patient_membership):
    patient_membership.user.delete()
    assert not ProjectMembership.objects.filter(pk=patient_membership.pk).exists()


# --- clean() ----------------------------------------------------------------------------------


def test_client_policy_from_another_project_refused(project):
    foreign = AccessPolicyFactory(project=ProjectFactory())
    client = ClientApplicationFactory.build(project=project, access_policy=foreign)
    with pytest.raises(ValidationError) as exc:
        client.clean()
    assert exc.value.message_dict == {"access_policy": ["The access policy belongs to another project."]}
    client.access_policy = AccessPolicyFactory(project=project)
    client.clean()


def test_membership_policy_from_another_project_refused(project):
    foreign = AccessPolicyFactory(project=ProjectFactory())
    membership = MembershipFactory.build(project=project, user=UserFactory(), access_policy=foreign)
    with pytest.raises(ValidationError) as exc:
        membership.clean()
    assert exc.value.message_dict == {"access_policy": ["The access policy belongs to another project."]}


def test_default_policy_from_another_project_refused(project):
    foreign = AccessPolicyFactory(project=ProjectFactory())
    default = DefaultAccessPolicy(project=project, profile_type="Patient", access_policy=foreign)
    with pytest.raises(ValidationError) as exc:
        default.clean()
    assert exc.value.message_dict == {"access_policy": ["The access policy belongs to another project."]}
    own = AccessPolicyFactory(project=project)
    DefaultAccessPolicy(project=project, profile_type="Patient", access_policy=own).clean()


@pytest.mark.parametrize("parameters", [[], {"org": 1}, {"org": None}, "Organization/1"])
def test_membership_parameters_must_map_names_to_strings(project, parameters):
    membership = MembershipFactory.build(project=project, user=UserFactory(), access_parameters=parameters)
    with pytest.raises(ValidationError) as exc:
        membership.clean()
    assert exc.value.message_dict == {"access_parameters": ["Parameters must map names to strings."]}


@pytest.mark.parametrize("parameters", [{"org": "Organization/1\x00"}, {"o\x00rg": "Organization/1"},
                                        {"org": "Organization/1\n"}])
def test_membership_parameters_have_no_control_characters(project, parameters):
    membership = MembershipFactory.build(project=project, user=UserFactory(), access_parameters=parameters)
    with pytest.raises(ValidationError) as exc:
        membership.clean()
    assert exc.value.message_dict == {"access_parameters": ["Parameters must not contain control characters."]}


@pytest.mark.parametrize("jwks", [{}, [], {"keys": {}}, {"keys": "x"}, "keys", {"key": []}])
def test_client_jwks_must_be_a_key_set(project, jwks):
    client = ClientApplicationFactory.build(project=project, jwks=jwks)
    with pytest.raises(ValidationError) as exc:
        client.clean()
    assert exc.value.message_dict == {"jwks": ['JWKS must be an object with a "keys" list.']}


@pytest.mark.parametrize("jwks", [None, {"keys": []}, {"keys": [{"kty": "EC"}]}])
def test_client_jwks_accepted(project, jwks):
    ClientApplicationFactory.build(project=project, jwks=jwks).clean()


@pytest.mark.spec("RFC 9700 §2.1.1")
def test_public_client_cannot_skip_pkce(project):
    client = ClientApplicationFactory.build(project=project, public=True, pkce_optional=True)
    with pytest.raises(ValidationError) as exc:
        client.clean()
    assert exc.value.message_dict == {"pkce_optional": ["Public clients must use PKCE."]}
    ClientApplicationFactory.build(project=project, pkce_optional=True).clean()  # confidential: allowed


HTTPS_ONLY = "must use https (http is allowed only for localhost, 127.0.0.1 and [::1])."


@pytest.mark.parametrize(("field", "value", "message"), [
    ("launch_uri", "http://ehr.example.org/launch",
     "Launch URI 'http://ehr.example.org/launch' " + HTTPS_ONLY),
    ("launch_uri", "https://ehr.example.org/launch#x",
     "Launch URI 'https://ehr.example.org/launch#x' must not contain a fragment (#…)."),
    ("jwks_uri", "http://app.example.org/jwks.json",
     "JWKS URI 'http://app.example.org/jwks.json' " + HTTPS_ONLY),
    ("allowed_origins", "https://app.example.org/path",
     "Allowed origin 'https://app.example.org/path' must be scheme://host[:port] with no path."),
    ("allowed_origins", "http://app.example.org",
     "Allowed origin 'http://app.example.org' " + HTTPS_ONLY),
    ("redirect_uris", "https://app.example.org/cb\nhttp://app.example.org/cb",
     "Redirect URI 'http://app.example.org/cb' " + HTTPS_ONLY),
    ("post_logout_redirect_uris", "https://*.example.org/bye",
     "Post-logout redirect URI 'https://*.example.org/bye' must not contain a wildcard."),
])
def test_client_uri_fields_validated(project, field, value, message):
    client = ClientApplicationFactory.build(project=project, **{field: value})
    with pytest.raises(ValidationError) as exc:
        client.clean()
    assert exc.value.message_dict == {field: [message]}


def test_client_clean_reports_every_field_at_once(project):
    client = ClientApplicationFactory.build(
        project=project, public=True, pkce_optional=True, redirect_uris="http://a.example.org/cb",
        launch_uri="http://a.example.org/launch", jwks={"keys": None},
    )
    with pytest.raises(ValidationError) as exc:
        client.clean()
    assert set(exc.value.message_dict) == {"redirect_uris", "launch_uri", "jwks", "pkce_optional"}


def test_client_clean_normalises_uri_lists(project):
    client = ClientApplicationFactory.build(
        project=project,
        redirect_uris="https://a.example.org/cb\r\n https://b.example.org/cb \nhttps://a.example.org/cb\n",
        allowed_origins="https://a.example.org\n\nhttps://a.example.org",
        post_logout_redirect_uris="",
    )
    client.clean()
    assert client.redirect_uris == "https://a.example.org/cb\nhttps://b.example.org/cb"
    assert client.allowed_origins == "https://a.example.org"
    assert client.post_logout_redirect_uris == ""


def test_good_client_passes_full_clean(project):
    client = ClientApplicationFactory.build(
        project=project, redirect_uris="https://app.example.org/cb\nhttp://localhost:3000/cb",
        launch_uri="https://app.example.org/launch", jwks_uri="https://app.example.org/jwks.json",
        allowed_origins="https://app.example.org", access_policy=AccessPolicyFactory(project=project),
    )
    client.full_clean(exclude=["user"])


def test_access_policy_clean_normalises_and_reports_rules(project):
    policy = AccessPolicy(project=project, name="P", resources=[{"resourceType": "Patient", "readonly": True}])
    policy.full_clean()
    assert policy.resources == [{"resourceType": "Patient", "interaction": ["read", "vread", "history", "search"]}]
    policy.resources = [{"resourceType": "Patient"}, {"resourceType": "nope"}]
    with pytest.raises(ValidationError) as exc:
        policy.full_clean()
    assert exc.value.message_dict == {
        "resources": ["Rule 2: resourceType must be a FHIR resource type (e.g. 'Observation') or '*'."],
    }


# --- ClientApplication behaviour --------------------------------------------------------------


@pytest.mark.spec("RFC 9700 §2.1")
@pytest.mark.parametrize(("uri", "allowed"), [
    ("https://app.example.org/callback", True),
    ("http://localhost:3000/cb", True),
    ("https://app.example.org/callback/", False),
    ("https://app.example.org/Callback", False),
    ("https://APP.example.org/callback", False),
    ("HTTPS://app.example.org/callback", False),
    ("https://app.example.org/callback?x=1", False),
    ("https://app.example.org/callback?", False),
    ("https://app.example.org/callback#", False),
    ("https://app.example.org:443/callback", False),
    ("http://app.example.org/callback", False),
    ("http://localhost:3001/cb", False),
    ("http://localhost/cb", False),
    ("http://127.0.0.1:3000/cb", False),
    ("https://app.example.org/call", False),
    ("https://app.example.org/callback/../callback", False),
    ("https://app.example.org/callback%2F", False),
    ("https://app.example.org", False),
    (" https://app.example.org/callback", False),
    ("", False),
])
def test_redirect_uri_allowed_is_exact(project, uri, allowed):
    client = ClientApplicationFactory(project=project,
                                      redirect_uris="https://app.example.org/callback\nhttp://localhost:3000/cb")
    assert client.redirect_uri_allowed(uri) is allowed


def test_redirect_uri_list(project):
    client = ClientApplicationFactory.build(project=project, redirect_uris="https://a.example.org/cb  https://b.example.org/cb")
    assert client.redirect_uri_list == ["https://a.example.org/cb", "https://b.example.org/cb"]
    assert ClientApplicationFactory.build(project=project, redirect_uris="").redirect_uri_list == []


@pytest.mark.spec("RFC 6749 §2.3.1")
def test_verify_secret_current_retiring_wrong_and_empty(client_app):
    current = client_app.plaintext_secret
    retiring = generate_client_secret()
    ClientApplication.objects.filter(pk=client_app.pk).update(retiring_secret=client_secret_digest(retiring))
    stored = ClientApplication.objects.get(pk=client_app.pk)
    assert stored.verify_secret(current) is True
    assert stored.verify_secret(retiring) is True
    assert stored.verify_secret(generate_client_secret()) is False
    assert stored.verify_secret(current + "0") is False
    assert stored.verify_secret(current.upper()) is False
    assert stored.verify_secret("") is False


def test_verify_secret_without_retiring_secret(client_app):
    stored = ClientApplication.objects.get(pk=client_app.pk)
    assert stored.retiring_secret == ""
    assert stored.verify_secret(client_app.plaintext_secret) is True
    assert stored.verify_secret("") is False


def test_stored_secret_is_a_digest(client_app):
    row = ClientApplication.objects.values("client_secret", "hash_client_secret").get(pk=client_app.pk)
    assert row["client_secret"] == client_secret_digest(client_app.plaintext_secret)
    assert row["hash_client_secret"] is False


def test_public_client_has_no_secret_to_verify(project):
    client = ClientApplicationFactory(project=project, public=True)
    assert client.client_secret == ""
    assert client.verify_secret("") is False
    assert client.verify_secret("anything") is False
    assert client.is_confidential is False


def test_client_is_active_needs_active_project(client_app):
    assert client_app.is_active is True
    client_app.status = ClientApplication.Status.OFF
    assert client_app.is_active is False
    client_app.status = ClientApplication.Status.ACTIVE
    client_app.project.active = False
    assert client_app.is_active is False


def test_client_defaults(project):
    client = ClientApplication.objects.create(project=project, name="Bare")
    assert client.client_type == ClientApplication.CLIENT_CONFIDENTIAL
    assert client.authorization_grant_type == ClientApplication.GRANT_AUTHORIZATION_CODE
    assert client.client_secret == ""  # DOT's generated plaintext default is not used
    assert client.hash_client_secret is False
    assert client.pkce_optional is False
    assert client.status == ClientApplication.Status.ACTIVE
    client.refresh_from_db()
    assert len(client.client_id) == 36
    assert client.reference == f"ClientApplication/{client.client_id}"


# --- membership and references -----------------------------------------------------------------


def test_membership_profile(project):
    membership = MembershipFactory(project=project, profile_type="Practitioner", profile_id="dr-1")
    assert membership.profile == "Practitioner/dr-1"
    generated = MembershipFactory(project=project, profile_type="Patient")
    generated.refresh_from_db()
    assert generated.profile == f"Patient/{generated.profile_id}"
    assert len(generated.profile_id) == 36


def test_policy_parameters_for_a_patient(project):
    membership = MembershipFactory(project=project, profile_type="Patient", profile_id="p1")
    assert membership.policy_parameters() == {"profile": "Patient/p1", "patient": "Patient/p1"}


def test_policy_parameters_keep_custom_values_but_never_override_profile(project):
    membership = MembershipFactory(
        project=project, profile_type="RelatedPerson", profile_id="rp1",
        access_parameters={"patient": "Patient/child", "organization": "Organization/o1", "profile": "Patient/evil"},
    )
    assert membership.policy_parameters() == {
        "patient": "Patient/child", "organization": "Organization/o1", "profile": "RelatedPerson/rp1",
    }


def test_references_and_str(project, policy, patient_membership):
    assert project.reference == f"Project/{project.id}"
    assert policy.reference == f"AccessPolicy/{policy.id}"
    assert patient_membership.reference == f"ProjectMembership/{patient_membership.id}"
    assert str(project) == project.name
    assert str(policy) == policy.name
    assert str(patient_membership) == f"{patient_membership.profile_display} in {project.name}"
    blank = MembershipFactory(project=project, profile_type="Practitioner", profile_id="x", profile_display="")
    assert str(blank) == f"Practitioner/x in {project.name}"
    key = _signing_key("kid-1", SigningKey.Status.INACTIVE)
    assert str(key) == "kid-1 (ES256, inactive)"


@pytest.mark.spec("RFC 8252 §7.3")
@pytest.mark.parametrize(("registered", "uri", "allowed"), [
    ("http://127.0.0.1:8888/callback", "http://127.0.0.1:8888/callback", True),
    ("http://127.0.0.1:8888/callback", "http://127.0.0.1:51234/callback", True),
    ("http://127.0.0.1/callback", "http://127.0.0.1:51234/callback", True),
    ("http://[::1]:80/cb", "http://[::1]:6000/cb", True),
    ("http://127.0.0.1:8888/callback", "http://127.0.0.1:51234/callback/", False),
    ("http://127.0.0.1:8888/callback", "http://127.0.0.1:51234/callback?x=1", False),
    ("http://127.0.0.1:8888/callback", "http://127.0.0.2:8888/callback", False),
    ("http://127.0.0.1:8888/callback", "https://127.0.0.1:8888/callback", False),
    ("http://127.0.0.1:8888/callback", "http://user@127.0.0.1:8888/callback", False),
    ("http://127.0.0.1:8888/callback", "http://127.0.0.1:bad/callback", False),
    ("http://localhost:8888/callback", "http://localhost:9999/callback", False),
])
def test_loopback_ip_redirect_uri_may_use_any_port(project, registered, uri, allowed):
    """Native apps bind an ephemeral port; only the port may differ, and only for IP literals."""
    client = ClientApplicationFactory(project=project, redirect_uris=registered)
    assert client.redirect_uri_allowed(uri) is allowed
