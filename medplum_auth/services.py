"""One write path per concept, used by the admin, the Project Admin pages, the CLI and the APIs.

Every function validates fully before writing and runs in one transaction, so bad input raises
``django.core.exceptions.ValidationError`` and leaves the database untouched (``update_*`` also
reload the instance). Functions that create a secret return its plaintext exactly once; it is
never stored or logged. Revoking logins (disabling or deleting a client, deactivating a member
or a project) goes through :func:`revoke_logins`.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models, transaction
from django.utils import timezone

from . import audit, keys, policies, revocation
from .audit import EventType
from .conf import auth_settings
from .models import (
    AccessPolicy,
    ClientApplication,
    Consent,
    DefaultAccessPolicy,
    LaunchContext,
    Login,
    Project,
    ProjectMembership,
    RegistrationToken,
    SigningKey,
)
from .secrets import digest_client_secret, generate_client_secret
from .signals import member_invited
from .validators import split_uris

logger = logging.getLogger("medplum_auth.audit")

#: Fields :func:`update_project` may change.
PROJECT_UPDATE_FIELDS = frozenset({"name", "description", "owner", "active", "mfa_required"})

#: Fields :func:`update_client` may change. Not the project, type or id (tokens were issued
#: under them) and never the secrets: those change only through :func:`rotate_client_secret`.
CLIENT_UPDATE_FIELDS = frozenset({
    "name", "description", "status", "redirect_uris", "post_logout_redirect_uris", "allowed_origins",
    "launch_uri", "access_policy", "pkce_optional", "authorization_grant_type", "skip_authorization",
    "always_issue_refresh_token", "access_token_lifetime", "refresh_token_lifetime", "jwks_uri", "jwks",
    "sign_in_text", "require_pushed_authorization_requests", "dpop_bound_access_tokens",
    "registered_metadata",
})

_URI_LIST_FIELDS = ("redirect_uris", "post_logout_redirect_uris", "allowed_origins")


class _Unset(enum.Enum):
    UNSET = "unset"


#: "Leave unchanged", where ``None`` is a meaningful value (e.g. no access policy).
UNSET = _Unset.UNSET


def _update_fields(instance: models.Model, fields: dict[str, Any], allowed: Collection[str],
                   clean_exclude: list[str] | None = None) -> list[str]:
    """Set ``fields`` on ``instance``, validate it fully and save only the fields that changed.

    Returns the names of the changed fields. Saving only those keeps a concurrent write to
    another field (a secret rotation during an admin edit) intact. On invalid input nothing is
    saved and ``instance`` is reloaded from the database. Call inside a transaction.
    """
    refused = sorted(set(fields) - set(allowed))
    if refused:
        raise ValidationError({name: ["This field cannot be changed here."] for name in refused})
    model = type(instance)
    current = model._default_manager.select_for_update().filter(pk=instance.pk).first()
    if current is None:
        raise ValidationError(f"This {model._meta.verbose_name} no longer exists.", code="gone")
    try:
        for name, value in fields.items():
            try:
                setattr(instance, name, value)
            except (TypeError, ValueError) as exc:  # e.g. a foreign key given something else
                raise ValidationError({name: [str(exc)]}) from None
        instance.full_clean(exclude=clean_exclude)
    except ValidationError:
        instance.refresh_from_db()
        raise
    attnames = {name: model._meta.get_field(name).attname for name in fields}
    changed = [name for name, attname in attnames.items()
               if getattr(instance, attname) != getattr(current, attname)]
    if changed:
        instance.save(update_fields=[*changed, "updated"])
    return changed


@transaction.atomic
def revoke_logins(
    *,
    user: Any = None,
    client: ClientApplication | None = None,
    membership: ProjectMembership | None = None,
    project: Project | None = None,
    reason: str,
) -> int:
    """Revoke the active logins matching every given filter; return how many were revoked.

    Every token issued from them stops working at once. At least one filter is required, so
    a forgotten argument cannot revoke every login. Logins revoked earlier keep their time
    and reason.
    """
    filters = {name: value for name, value in
               (("user", user), ("client", client), ("membership", membership), ("project", project))
               if value is not None}
    if not filters:
        raise TypeError("revoke_logins() needs at least one of user, client, membership or project.")
    count, _now = revocation.revoke(Login.objects.filter(**filters), reason)
    audit_ids = {"user": user.pk if user is not None else None,
                 "client": client.client_id if client is not None else None,
                 "membership": membership.pk if membership is not None else None,
                 "project": project.pk if project is not None else None}
    described = " ".join(f"{name}={value}" for name, value in audit_ids.items() if value is not None)
    if count:
        subject, display = _revocation_subject(user=user, client=client, membership=membership, project=project)
        audit.record(EventType.TOKEN_REVOKED, project=_project_of(client, membership, project),
                     subject=subject, subject_display=display, reason=reason, detail={"logins": count},
                     message=f"logins revoked count={count} reason={reason} {described}")
    else:
        logger.info("logins revoked count=%d reason=%s %s", count, reason, described)
    return count


def _project_of(*objects: Any) -> Any:
    for obj in objects:
        if isinstance(obj, Project):
            return obj.pk
        if obj is not None and getattr(obj, "project_id", None):
            return obj.project_id
    return None


def _revocation_subject(*, user: Any, client: Any, membership: Any, project: Any) -> tuple[str, str]:
    if membership is not None:
        return membership.reference, membership.profile_display
    if client is not None:
        return client.reference, client.name
    if user is not None:
        return f"User/{user.pk}", getattr(user, "email", "") or user.get_username()
    return project.reference, project.name


@transaction.atomic
def create_project(name: str, *, description: str = "", owner: Any = None) -> Project:
    """Create a project (a tenant)."""
    project = Project(name=(name or "").strip(), description=description, owner=owner)
    project.full_clean()
    project.save()
    audit.record(EventType.PROJECT_CREATED, project=project, subject=project.reference, subject_display=project.name,
                 message=f"project created id={project.id}")
    return project


@transaction.atomic
def create_client(
    project: Project,
    name: str,
    *,
    redirect_uris: list[str] | str | None = None,
    public: bool = False,
    pkce_optional: bool = False,
    access_policy: AccessPolicy | None = None,
    description: str = "",
    audit_detail: dict[str, Any] | None = None,
    **fields: Any,
) -> tuple[ClientApplication, str | None]:
    """Create a client; return it and its secret (``None`` for a public client).

    The secret is 256 random bits, stored only as a keyed digest. ``fields`` sets any other
    :class:`ClientApplication` field (lifetimes, origins, launch URI, JWKS …); ``audit_detail``
    adds to the audit event's detail (how the client came to be).
    """
    if not (name or "").strip():
        raise ValidationError({"name": ["Client name is required."]})
    client = ClientApplication(
        project=project,
        name=name.strip(),
        description=description,
        redirect_uris="\n".join(split_uris(redirect_uris)),
        client_type=ClientApplication.CLIENT_PUBLIC if public else ClientApplication.CLIENT_CONFIDENTIAL,
        pkce_optional=pkce_optional,
        access_policy=access_policy,
        **fields,
    )
    secret = None if public else generate_client_secret()
    client.client_secret = digest_client_secret(secret) if secret else ""
    client.full_clean(exclude=["user"])
    client.save()
    audit.record(EventType.CLIENT_CREATED, project=project, subject=client.reference, subject_display=client.name,
                 detail={"public": public, "pkce_optional": pkce_optional, **(audit_detail or {})},
                 message=f"client created client_id={client.client_id} project={project.id}")
    return client, secret


@transaction.atomic
def update_project(project: Project, **fields: Any) -> Project:
    """Change a project's :data:`PROJECT_UPDATE_FIELDS`; on invalid input nothing changes.

    Deactivating a project revokes its active logins (it accepts no tokens while inactive, and
    they stay revoked if it is reactivated).
    """
    if isinstance(fields.get("name"), str):
        fields["name"] = fields["name"].strip()
    changed = _update_fields(project, fields, PROJECT_UPDATE_FIELDS)
    if changed:
        audit.record(EventType.PROJECT_UPDATED, project=project, subject=project.reference,
                     subject_display=project.name, detail={"fields": changed},
                     message=f"project updated id={project.id} fields={','.join(changed)}")
    if "active" in changed and not project.active:
        revoke_logins(project=project, reason="project_deactivated")
    return project


@transaction.atomic
def update_client(client: ClientApplication, **fields: Any) -> ClientApplication:
    """Change a client's :data:`CLIENT_UPDATE_FIELDS`; on invalid input nothing changes.

    URI lists may be given as lists or newline-separated text. Only changed fields are
    written, so the secret is never touched. Setting ``status`` to off revokes the client's
    active logins, as :func:`set_client_status` does.
    """
    for name in _URI_LIST_FIELDS:
        if name in fields and not isinstance(fields[name], str):
            fields[name] = "\n".join(split_uris(fields[name]))
    if "name" in fields:
        fields["name"] = (fields["name"] or "").strip()
        if not fields["name"]:
            raise ValidationError({"name": ["Client name is required."]})
    changed = _update_fields(client, fields, CLIENT_UPDATE_FIELDS, clean_exclude=["user"])
    if changed:
        # Field names only: values may hold URIs or keys that do not belong in the audit log.
        audit.record(EventType.CLIENT_UPDATED, project=client.project_id, subject=client.reference,
                     subject_display=client.name, detail={"fields": changed},
                     message=f"client updated client_id={client.client_id} fields={','.join(changed)}")
    if "status" in changed and client.status == ClientApplication.Status.OFF:
        revoke_logins(client=client, reason="client_disabled")
    return client


@transaction.atomic
def set_client_status(client: ClientApplication, status: str) -> ClientApplication:
    """Enable or disable a client. Disabling also revokes its active logins (idempotent).

    Only the status is validated and written: a client whose other settings no longer pass
    validation must still be possible to switch off.
    """
    if status not in ClientApplication.Status.values:
        raise ValidationError({"status": [f"Status must be one of {', '.join(ClientApplication.Status.values)}."]},
                              code="invalid_choice")
    previous = (ClientApplication.objects.select_for_update().filter(pk=client.pk)
                .values_list("status", flat=True).first())
    if previous is None:
        raise ValidationError("This client application no longer exists.", code="gone")
    client.status = status
    if previous != status:
        client.save(update_fields=["status", "updated"])
        audit.record(EventType.CLIENT_UPDATED, project=client.project_id, subject=client.reference,
                     subject_display=client.name, detail={"fields": ["status"], "status": status},
                     message=f"client status changed client_id={client.client_id} status={status}")
    if status == ClientApplication.Status.OFF:
        revoke_logins(client=client, reason="client_disabled")
    return client


@transaction.atomic
def delete_client(client: ClientApplication) -> None:
    """Delete a client, revoking its active logins first.

    Its logins, consents and DOT token rows are deleted with it (``on_delete=CASCADE``).
    """
    revoke_logins(client=client, reason="client_deleted")
    client_id, project_id, reference, name = client.client_id, client.project_id, client.reference, client.name
    client.delete()
    audit.record(EventType.CLIENT_DELETED, project=project_id, subject=reference, subject_display=name,
                 message=f"client deleted client_id={client_id} project={project_id}")


@transaction.atomic
def rotate_client_secret(client: ClientApplication) -> str:
    """Issue a new secret; the current one keeps working as the retiring secret.

    A secret that was already retiring is replaced (only one old secret stays valid).
    ``client`` is updated in place, so saving it afterwards keeps the new secret.
    """
    row = ClientApplication.objects.select_for_update().get(pk=client.pk)
    if not row.is_confidential:
        raise ValidationError("Public clients have no secret.", code="public_client")
    secret = generate_client_secret()
    row.retiring_secret = row.client_secret
    row.client_secret = digest_client_secret(secret)
    row.secret_rotated_at = timezone.now()
    update_fields = ["client_secret", "retiring_secret", "secret_rotated_at", "updated"]
    row.save(update_fields=update_fields)
    for field in update_fields:
        setattr(client, field, getattr(row, field))
    audit.record(EventType.CLIENT_SECRET_ROTATED, project=row.project_id, subject=row.reference,
                 subject_display=row.name,
                 message=f"client secret rotated client_id={row.client_id}")
    return secret


@transaction.atomic
def retire_client_secret(client: ClientApplication) -> None:
    """Stop accepting the retiring secret."""
    ClientApplication.objects.filter(pk=client.pk).update(retiring_secret="", updated=timezone.now())
    client.retiring_secret = ""
    audit.record(EventType.CLIENT_SECRET_RETIRED, project=client.project_id, subject=client.reference,
                 subject_display=client.name, message=f"client retiring secret removed client_id={client.client_id}")


@transaction.atomic
def create_access_policy(
    project: Project, name: str, rules: list[dict[str, Any]] | str, *, description: str = ""
) -> AccessPolicy:
    """Create a validated policy from a rule list or its JSON text."""
    normalised = policies.parse_policy_json(rules) if isinstance(rules, str | bytes) else policies.validate_rules(rules)
    policy = AccessPolicy(project=project, name=(name or "").strip(), description=description, resources=normalised)
    policy.full_clean()
    policy.save()
    audit.record(EventType.ACCESS_POLICY_CREATED, project=project, subject=policy.reference,
                 subject_display=policy.name,
                 detail={"rules": len(policy.resources)},
                 message=f"access policy created id={policy.id} project={project.id}")
    return policy


@transaction.atomic
def update_access_policy(
    policy: AccessPolicy,
    *,
    name: str | None = None,
    rules: list[dict[str, Any]] | str | None = None,
    description: str | None = None,
) -> AccessPolicy:
    """Update a policy; on invalid input nothing changes (the instance is reloaded)."""
    try:
        if rules is not None:
            policy.resources = (policies.parse_policy_json(rules) if isinstance(rules, str | bytes)
                                else policies.validate_rules(rules))
        if name is not None:
            policy.name = name.strip()
        if description is not None:
            policy.description = description
        policy.full_clean()
    except ValidationError:
        policy.refresh_from_db()
        raise
    policy.save()
    audit.record(EventType.ACCESS_POLICY_UPDATED, project=policy.project_id, subject=policy.reference,
                 subject_display=policy.name, detail={"rules": len(policy.resources)},
                 message=f"access policy updated id={policy.id}")
    return policy


@transaction.atomic
def set_default_access_policy(
    project: Project, profile_type: str, access_policy: AccessPolicy | None
) -> DefaultAccessPolicy | None:
    """Make ``access_policy`` the one new ``profile_type`` members get; ``None`` removes the default."""
    if access_policy is None:
        DefaultAccessPolicy.objects.filter(project=project, profile_type=profile_type).delete()
        audit.record(EventType.DEFAULT_POLICY_CHANGED, project=project, subject=project.reference,
                     subject_display=project.name, detail={"profile_type": profile_type, "access_policy": None},
                     message=f"default access policy removed project={project.id} profile_type={profile_type}")
        return None
    default = (DefaultAccessPolicy.objects.select_for_update().filter(project=project, profile_type=profile_type)
               .first() or DefaultAccessPolicy(project=project, profile_type=profile_type))
    default.access_policy = access_policy
    default.full_clean()
    default.save()
    audit.record(EventType.DEFAULT_POLICY_CHANGED, project=project, subject=access_policy.reference,
                 subject_display=access_policy.name,
                 detail={"profile_type": profile_type, "access_policy": access_policy.reference},
                 message=f"default access policy set project={project.id} profile_type={profile_type} "
                         f"policy={access_policy.id}")
    return default


@dataclass(frozen=True)
class Invitation:
    user: Any
    membership: ProjectMembership
    created_user: bool


@transaction.atomic
def invite_member(
    project: Project,
    email: str,
    *,
    profile_type: str,
    first_name: str,
    last_name: str,
    password: str | None = None,
    admin: bool = False,
    access_policy: AccessPolicy | None = None,
    access_parameters: dict[str, str] | None = None,
) -> Invitation:
    """Create the user if needed, the profile reference and the membership.

    An existing user (matched by email, case-insensitively) is reused and their password is
    never changed by an invite. Without an explicit policy the project's default policy for
    the profile type applies.
    """
    User = get_user_model()
    email = (email or "").strip().lower()
    errors: dict[str, list[str]] = {}
    try:
        validate_email(email)
    except ValidationError:
        errors["email"] = ["Enter a valid email address."]
    if profile_type not in {"Patient", "Practitioner", "RelatedPerson"}:
        errors["profile_type"] = ["Profile type must be Patient, Practitioner or RelatedPerson."]
    if not (first_name or "").strip():
        errors["first_name"] = ["First name is required."]
    if not (last_name or "").strip():
        errors["last_name"] = ["Last name is required."]
    if errors:
        raise ValidationError(errors)

    existing = list(User._default_manager.select_for_update().filter(email__iexact=email)[:2])
    if len(existing) > 1:
        raise ValidationError({"email": ["More than one user has this email address."]})
    user = existing[0] if existing else None
    if user is not None:
        if password:
            raise ValidationError({"password": [
                "A user with this email already exists; an invite does not change their password."]})
        if ProjectMembership.objects.filter(project=project, user=user, profile_type=profile_type).exists():
            raise ValidationError({"email": [f"{email} is already a {profile_type} member of this project."]})
    else:
        user = User(email=email, first_name=first_name.strip(), last_name=last_name.strip())
        username_field = User.USERNAME_FIELD
        if username_field != "email":
            setattr(user, username_field, email)
        if User._default_manager.filter(**{f"{username_field}__iexact": email}).exists():
            raise ValidationError({"email": ["A user with this username already exists."]})
        if password:
            from django.contrib.auth.password_validation import validate_password

            try:
                validate_password(password, user)
            except ValidationError as exc:
                raise ValidationError({"password": exc.messages}) from None
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save()

    if access_policy is None:
        default = DefaultAccessPolicy.objects.filter(project=project, profile_type=profile_type).first()
        access_policy = default.access_policy if default else None
    membership = ProjectMembership(
        project=project,
        user=user,
        profile_type=profile_type,
        profile_display=f"{first_name.strip()} {last_name.strip()}",
        access_policy=access_policy,
        access_parameters=access_parameters or {},
        admin=admin,
    )
    membership.full_clean()
    membership.save()
    member_invited.send(sender=ProjectMembership, membership=membership, user=user,
                        created_user=not existing, first_name=first_name.strip(), last_name=last_name.strip())
    audit.record(EventType.MEMBERSHIP_INVITED, project=project, subject=membership.reference,
                 subject_display=f"{membership.profile_display} <{user.email}>",
                 detail={"profile": membership.profile, "admin": admin, "created_user": not existing,
                         "access_policy": access_policy.reference if access_policy else None},
                 message=f"member invited membership={membership.id} project={project.id} profile={membership.profile}")
    return Invitation(user=user, membership=membership, created_user=not existing)


@transaction.atomic
def update_membership(
    membership: ProjectMembership,
    *,
    access_policy: AccessPolicy | None | _Unset = UNSET,
    access_parameters: dict[str, str] | _Unset = UNSET,
    admin: bool | _Unset = UNSET,
    active: bool | _Unset = UNSET,
) -> ProjectMembership:
    """Change a membership's access; arguments left :data:`UNSET` stay as they are.

    ``access_policy=None`` removes the policy (full access, Medplum's legacy default). The
    policy must belong to the membership's project. Deactivating revokes the membership's
    active logins. On invalid input nothing changes (the instance is reloaded).
    """
    fields = {name: value for name, value in (("access_policy", access_policy),
                                               ("access_parameters", access_parameters),
                                               ("admin", admin), ("active", active))
              if value is not UNSET}
    changed = _update_fields(membership, fields, fields.keys())
    if changed:
        audit.record(EventType.MEMBERSHIP_CHANGED, project=membership.project_id, subject=membership.reference,
                     subject_display=membership.profile_display,
                     detail={"fields": changed, "admin": membership.admin, "active": membership.active,
                             "access_policy": f"AccessPolicy/{membership.access_policy_id}"
                             if membership.access_policy_id else None},
                     message=f"membership updated id={membership.id} fields={','.join(changed)}")
    if "active" in changed and not membership.active:
        revoke_logins(membership=membership, reason="membership_deactivated")
    return membership


@transaction.atomic
def rotate_signing_keys(algorithm: str | None = None) -> SigningKey:
    """Make a new active signing key; the previous one stays published (inactive) until retired."""
    algorithm = algorithm or auth_settings.SIGNING_ALGORITHM
    key, encrypted = keys.generate_key(algorithm)
    # Lock the current signer so two concurrent rotations cannot both demote it.
    SigningKey.objects.select_for_update().filter(status=SigningKey.Status.ACTIVE).update(
        status=SigningKey.Status.INACTIVE)
    row = SigningKey.objects.create(kid=key.get("kid"), algorithm=algorithm,
                                    status=SigningKey.Status.ACTIVE, private_key=encrypted,
                                    public_jwk=keys.public_jwk(key))
    audit.record(EventType.SIGNING_KEY_ROTATED, subject=f"SigningKey/{row.kid}", detail={"algorithm": algorithm},
                 message=f"signing key rotated kid={row.kid} alg={algorithm}")
    return row


@transaction.atomic
def retire_signing_key(kid: str) -> SigningKey:
    """Stop publishing an inactive key; tokens it signed no longer verify."""
    row = SigningKey.objects.select_for_update().filter(kid=kid).first()
    if row is None:
        raise ValidationError(f"No signing key with kid {kid!r}.", code="unknown_kid")
    if row.status == SigningKey.Status.ACTIVE:
        raise ValidationError("The active signing key cannot be retired; rotate first.", code="active_key")
    if row.status == SigningKey.Status.RETIRED:
        return row  # idempotent: keep the original retired_at
    row.status = SigningKey.Status.RETIRED
    row.retired_at = timezone.now()
    row.save(update_fields=["status", "retired_at"])
    audit.record(EventType.SIGNING_KEY_RETIRED, subject=f"SigningKey/{kid}", message=f"signing key retired kid={kid}")
    return row


def ensure_signing_key() -> SigningKey:
    """The active signing key, creating one when there is none."""
    return keys.get_active_key() or rotate_signing_keys()


def revoke_login(login: Login, *, reason: str) -> bool:
    """Revoke one login, so every token issued from it stops working; ``False`` if it already was.

    The single-login path used by logout, revocation, code replay and refresh-token reuse; it
    also updates ``login`` in memory.
    """
    if login.revoked_at is not None:
        return False
    count, now = revocation.revoke(Login.objects.filter(pk=login.pk), reason)
    login.revoked_at, login.revoked_reason = now, reason
    if count:
        audit.record_for_login(EventType.TOKEN_REVOKED, login, reason=reason,
                               message=f"login revoked login={login.pk} reason={reason} project={login.project_id}")
    return bool(count)


@transaction.atomic
def revoke_consent(consent: Consent) -> int:
    """A user withdraws a client's remembered consent: delete it and revoke that user's logins at
    the client (its tokens stop working at once); return how many logins were revoked.

    The next authorization request from the client shows the consent page again.
    """
    user, client = consent.user, consent.client
    consent.delete()
    count = revoke_logins(user=user, client=client, reason="consent_revoked")
    logger.info("consent revoked user=%s client=%s logins=%s", user.pk, client.client_id, count)
    return count


@transaction.atomic
def remove_membership(membership: ProjectMembership) -> None:
    """Remove a member from a project: revoke the membership's logins, then delete it.

    The user stays (they may belong to other projects); their logins through this membership
    are deleted with it (``on_delete=CASCADE``), so its tokens fail closed.
    """
    revoke_logins(membership=membership, reason="membership_removed")
    membership_id, project_id, profile = membership.pk, membership.project_id, membership.profile
    reference, display = membership.reference, membership.profile_display
    membership.delete()
    audit.record(EventType.MEMBERSHIP_REMOVED, project=project_id, subject=reference, subject_display=display,
                 detail={"profile": profile},
                 message=f"membership removed id={membership_id} project={project_id} profile={profile}")


def reset_mfa(membership: ProjectMembership) -> int:
    """An admin's reset of a member's second factors (authenticator app, security keys, recovery
    codes), e.g. after a lost phone; they sign in with their password and enroll again if their
    project requires it. Returns how many factors were removed."""
    from . import mfa

    removed = mfa.reset(membership.user)
    audit.record(EventType.MFA_DISABLED, project=membership.project_id, subject=f"User/{membership.user_id}",
                 subject_display=getattr(membership.user, "email", ""), detail={"reset": True, "factors": removed},
                 message=f"second factors reset user={membership.user_id} project={membership.project_id}")
    return removed


@transaction.atomic
def create_launch(
    client: ClientApplication,
    patient: str,
    *,
    encounter: str | None = None,
    project: Project | None = None,
    created_by: Any = None,
) -> LaunchContext:
    """A SMART EHR launch context for ``client``: ``patient`` (``Patient/<id>`` or an id) and an
    optional ``encounter``; usable once within ``LAUNCH_LIFETIME`` seconds.

    ``project``, when given, is the caller's project and must be the client's. The client must
    be active and have a launch URI. Whether the referenced resources exist is not checked here
    (this app has no FHIR store); their shapes are. Open the app at
    :func:`medplum_auth.launch.launch_url`.
    """
    from datetime import timedelta

    from .launch import normalise_reference

    errors: dict[str, list[str]] = {}
    if project is not None and client.project_id != project.pk:
        errors["client"] = ["The client belongs to another project."]
    elif not client.is_active:
        errors["client"] = ["The client is disabled."]
    elif not client.launch_uri:
        errors["client"] = ["The client has no launch URI."]
    patient_ref = normalise_reference(patient, "Patient")
    if patient_ref is None:
        errors["patient"] = ["Enter a Patient reference like Patient/123."]
    encounter_ref = ""
    if encounter:
        encounter_ref = normalise_reference(encounter, "Encounter") or ""
        if not encounter_ref:
            errors["encounter"] = ["Enter an Encounter reference like Encounter/456."]
    if errors:
        raise ValidationError(errors)
    launch = LaunchContext.objects.create(
        project_id=client.project_id, client=client, patient=patient_ref, encounter=encounter_ref,
        created_by=created_by if getattr(created_by, "pk", None) else None,
        expires_at=timezone.now() + timedelta(seconds=int(auth_settings.LAUNCH_LIFETIME)),
    )
    audit.record(EventType.LAUNCH_CREATED, project=client.project_id, subject=f"LaunchContext/{launch.pk}",
                 user=created_by if getattr(created_by, "pk", None) else None,
                 subject_display=client.name, detail={"client": client.client_id, "patient": patient_ref},
                 message=f"launch created id={launch.pk} client_id={client.client_id} project={client.project_id}")
    return launch


def create_registration_token(project: Project, *, label: str = "", access_policy: AccessPolicy | None = None,
                              lifetime_days: int | None = None) -> tuple[RegistrationToken, str]:
    """Issue an initial access token for dynamic client registration (RFC 7591 §3) in ``project``.

    Returns the row and the token, shown once: only its SHA-256 is stored. Clients registered
    with it get ``access_policy``.
    """
    if access_policy is not None and access_policy.project_id != project.pk:
        raise ValidationError({"access_policy": ["The access policy belongs to another project."]})
    if lifetime_days is not None and lifetime_days < 1:
        raise ValidationError({"lifetime_days": ["The lifetime must be at least one day."]})
    token = secrets.token_urlsafe(32)
    row = RegistrationToken.objects.create(
        project=project, digest=hashlib.sha256(token.encode()).hexdigest(), label=label.strip()[:200],
        access_policy=access_policy,
        expires_at=timezone.now() + timedelta(days=lifetime_days) if lifetime_days else None)
    audit.record(EventType.REGISTRATION_TOKEN_CREATED, project=project, subject=f"RegistrationToken/{row.pk}",
                 subject_display=row.label,
                 detail={"expires_at": row.expires_at.isoformat() if row.expires_at else None},
                 message=f"registration token created project={project.id} token={row.pk}")
    return row, token


def revoke_registration_token(row: RegistrationToken) -> None:
    """Stop an initial access token from registering more clients (registered ones stay)."""
    if RegistrationToken.objects.filter(pk=row.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()):
        audit.record(EventType.REGISTRATION_TOKEN_REVOKED, project=row.project_id,
                     subject=f"RegistrationToken/{row.pk}", subject_display=row.label,
                     message=f"registration token revoked project={row.project_id} token={row.pk}")
