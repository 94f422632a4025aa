"""Identity model: projects, memberships, access policies, clients and signing keys."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _
from oauth2_provider.models import AbstractApplication

from . import policies
from .secrets import verify_client_secret
from .validators import split_uris, stored_uris, validate_origin, validate_redirect_uri, validate_redirect_uris


def new_client_id() -> str:
    """Client ids are UUID strings, like Medplum's ClientApplication ids."""
    return str(uuid.uuid4())


def new_profile_id() -> str:
    return str(uuid.uuid4())


class ProfileType(models.TextChoices):
    PATIENT = "Patient", _("Patient")
    PRACTITIONER = "Practitioner", _("Practitioner")
    RELATED_PERSON = "RelatedPerson", _("RelatedPerson")


class Project(models.Model):
    """A tenant: every client, policy, membership and FHIR resource belongs to one project."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(_("name"), max_length=200, unique=True)
    description = models.TextField(_("description"), blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="+", verbose_name=_("owner"))
    active = models.BooleanField(_("active"), default=True,
                                 help_text=_("Inactive projects accept no sign-ins and no tokens."))
    mfa_required = models.BooleanField(
        _("MFA required"), default=False,
        help_text=_("Members must use a second factor (authenticator app or security key); those without one "
                    "enroll at their next sign-in."))
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("project")

    def __str__(self) -> str:
        return self.name

    @property
    def reference(self) -> str:
        return f"Project/{self.id}"


class AccessPolicy(models.Model):
    """Medplum's ``AccessPolicy``: which resource types, instances and fields a login may reach."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="access_policies",
                                verbose_name=_("project"))
    name = models.CharField(_("name"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    resources = models.JSONField(_("rules"), default=list, blank=True,
                                 help_text=_("List of rules: resourceType, criteria, interaction, "
                                             "hiddenFields, readonlyFields."))
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["project__name", "name"]
        verbose_name = _("access policy")
        verbose_name_plural = _("access policies")
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="medplum_policy_unique_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def reference(self) -> str:
        return f"AccessPolicy/{self.id}"

    def clean(self) -> None:
        try:
            self.resources = policies.validate_rules(self.resources)
        except ValidationError as exc:
            raise ValidationError({"resources": exc.error_list}) from None


class DefaultAccessPolicy(models.Model):
    """Policy given to new members of a profile type when the invite names none."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="default_policies")
    profile_type = models.CharField(_("profile type"), max_length=32, choices=ProfileType.choices)
    access_policy = models.ForeignKey(AccessPolicy, on_delete=models.PROTECT, related_name="+",
                                      verbose_name=_("access policy"))

    class Meta:
        verbose_name = _("default access policy")
        verbose_name_plural = _("default access policies")
        constraints = [models.UniqueConstraint(fields=["project", "profile_type"],
                                               name="medplum_default_policy_unique_type")]

    def __str__(self) -> str:
        return f"{self.profile_type}: {self.access_policy}"

    def clean(self) -> None:
        if self.access_policy_id and self.project_id and self.access_policy.project_id != self.project_id:
            raise ValidationError({"access_policy": _("The access policy belongs to another project.")})


class ProjectMembership(models.Model):
    """A user's place in a project: one profile (Patient/Practitioner/…) and one access policy."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="memberships",
                                verbose_name=_("project"))
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="medplum_memberships", verbose_name=_("user"))
    profile_type = models.CharField(_("profile type"), max_length=32, choices=ProfileType.choices)
    profile_id = models.CharField(_("profile id"), max_length=64, default=new_profile_id,
                                  help_text=_("Id of the FHIR profile resource."))
    profile_display = models.CharField(_("profile display"), max_length=255, blank=True)
    access_policy = models.ForeignKey(
        AccessPolicy, on_delete=models.PROTECT, null=True, blank=True, related_name="memberships",
        verbose_name=_("access policy"),
        help_text=_("Without a policy a member has full access to the project's data (Medplum's legacy default)."),
    )
    access_parameters = models.JSONField(_("policy parameters"), default=dict, blank=True,
                                         help_text=_("Extra %name values substituted into the policy."))
    admin = models.BooleanField(_("project admin"), default=False)
    active = models.BooleanField(_("active"), default=True)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    updated = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        ordering = ["project__name", "profile_display"]
        verbose_name = _("project membership")
        constraints = [
            models.UniqueConstraint(fields=["project", "profile_type", "profile_id"],
                                    name="medplum_membership_unique_profile"),
            models.UniqueConstraint(fields=["project", "user", "profile_type"],
                                    name="medplum_membership_unique_user_type"),
        ]
        indexes = [models.Index(fields=["user", "active"], name="medplum_membership_user")]

    def __str__(self) -> str:
        return f"{self.profile_display or self.profile} in {self.project}"

    @property
    def reference(self) -> str:
        return f"ProjectMembership/{self.id}"

    @property
    def profile(self) -> str:
        """The FHIR reference of the profile, e.g. ``Patient/6b0d…``."""
        return f"{self.profile_type}/{self.profile_id}"

    def policy_parameters(self) -> dict[str, str]:
        """Values for ``%name`` in the policy: the membership's own, then ``profile``/``patient``."""
        return self.parameters_for(self.access_parameters, self.profile)

    @staticmethod
    def parameters_for(access_parameters: Any, profile: str) -> dict[str, str]:
        """:meth:`policy_parameters` of given values (shared with ``lookups.MembershipRow``)."""
        params = {str(k): str(v) for k, v in (access_parameters or {}).items()}
        params["profile"] = profile
        params.setdefault("patient", profile)
        return params

    def clean(self) -> None:
        if self.access_policy_id and self.project_id and self.access_policy.project_id != self.project_id:
            raise ValidationError({"access_policy": _("The access policy belongs to another project.")})
        if not isinstance(self.access_parameters, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.access_parameters.items()
        ):
            raise ValidationError({"access_parameters": _("Parameters must map names to strings.")})
        if any(ord(char) < 32 for item in self.access_parameters.items() for text in item for char in text):
            # They end up in search criteria, and PostgreSQL cannot store NUL.
            raise ValidationError({"access_parameters": _("Parameters must not contain control characters.")})


def _same_loopback_uri(uri: str, registered: str) -> bool:
    from urllib.parse import urlsplit

    try:
        a, b = urlsplit(uri), urlsplit(registered)
        a.port, b.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    if a.scheme != "http" or b.scheme != "http" or a.hostname not in ("127.0.0.1", "::1"):
        return False
    if a.username is not None or a.password is not None:
        return False
    host = a.netloc.rsplit(":", 1)[0] if a.port is not None else a.netloc
    other = b.netloc.rsplit(":", 1)[0] if b.port is not None else b.netloc
    return host == other and (a.path, a.query, a.fragment) == (b.path, b.query, b.fragment) and "#" not in uri


class ClientApplication(AbstractApplication):
    """Medplum's ClientApplication, as django-oauth-toolkit's swapped Application model.

    ``client_secret`` and ``retiring_secret`` hold HMAC-SHA256 digests, never plaintext;
    create and rotate secrets with :mod:`medplum_auth.services`, which return the plaintext once.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        OFF = "off", _("Off")

    # DOT's client_secret defaults to a generated plaintext and hashes it with PBKDF2 on save;
    # ours stores only the digest written by services.create_client / rotate_client_secret.
    client_id = models.CharField(_("client ID"), max_length=255, unique=True, default=new_client_id)
    client_secret = models.CharField(_("client secret digest"), max_length=255, blank=True, default="",
                                     editable=False)
    hash_client_secret = models.BooleanField(default=False, editable=False)
    client_type = models.CharField(_("client type"), max_length=32, choices=AbstractApplication.CLIENT_TYPES,
                                   default=AbstractApplication.CLIENT_CONFIDENTIAL)
    authorization_grant_type = models.CharField(
        _("authorization grant type"), max_length=44, choices=AbstractApplication.GRANT_TYPES,
        default=AbstractApplication.GRANT_AUTHORIZATION_CODE,
    )
    algorithm = models.CharField(_("id token algorithm"), max_length=5, choices=AbstractApplication.ALGORITHM_TYPES,
                                 default=AbstractApplication.RS256_ALGORITHM, blank=True)

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="clients",
                                verbose_name=_("project"))
    description = models.TextField(_("description"), blank=True)
    access_policy = models.ForeignKey(
        AccessPolicy, on_delete=models.PROTECT, null=True, blank=True, related_name="clients",
        verbose_name=_("access policy"),
        help_text=_("Limits what the client reaches when it acts for itself (client_credentials) and, unless "
                    "CLIENT_POLICY_RESTRICTS_USERS is off, what every user reaches through it."),
    )
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.ACTIVE)
    pkce_optional = models.BooleanField(
        _("PKCE optional"), default=False,
        help_text=_("Not recommended: lets this client use the code flow without PKCE (RFC 9700 §2.1.1)."),
    )
    retiring_secret = models.CharField(_("retiring secret digest"), max_length=255, blank=True, default="",
                                       editable=False)
    secret_rotated_at = models.DateTimeField(_("secret rotated at"), null=True, blank=True, editable=False)
    jwks_uri = models.URLField(_("JWKS URI"), blank=True, max_length=2000,
                               help_text=_("Public keys for private_key_jwt client authentication."))
    jwks = models.JSONField(_("JWKS"), null=True, blank=True,
                            help_text=_("Inline JSON Web Key Set, instead of a JWKS URI."))
    launch_uri = models.URLField(_("launch URI"), blank=True, max_length=2000,
                                 help_text=_("SMART EHR launch URL of the app."))
    access_token_lifetime = models.PositiveIntegerField(_("access token lifetime (s)"), null=True, blank=True)
    refresh_token_lifetime = models.PositiveIntegerField(_("refresh token lifetime (s)"), null=True, blank=True)
    always_issue_refresh_token = models.BooleanField(
        _("always issue refresh tokens"), default=False,
        help_text=_("Issue refresh tokens even when offline_access is not requested (Medplum's grantType)."),
    )
    sign_in_text = models.TextField(_("sign-in text"), blank=True,
                                    help_text=_("Shown on the sign-in page for this client."))
    #: SHA-256 of the RFC 7592 registration access token of a dynamically registered client.
    registration_access_digest = models.CharField(max_length=64, blank=True, default="", editable=False,
                                                  db_index=True)
    #: What a dynamically registered client asked for and this model has no field for (RFC 7591
    #: ``grant_types``, ``response_types``, ``token_endpoint_auth_method``): RFC 7592 reads return it.
    registered_metadata = models.JSONField(null=True, blank=True, editable=False)
    require_pushed_authorization_requests = models.BooleanField(
        _("require pushed authorization requests"), default=False,
        help_text=_("Accept authorization requests only through /oauth2/par (RFC 9126): the request's "
                    "parameters are sent by the client itself, never through the browser."),
    )
    dpop_bound_access_tokens = models.BooleanField(
        _("require DPoP"), default=False,
        help_text=_("Issue only DPoP-bound access tokens (RFC 9449): token requests without a DPoP proof are "
                    "refused, and a stolen token is useless without the client's private key."),
    )

    class Meta(AbstractApplication.Meta):
        swappable = "OAUTH2_PROVIDER_APPLICATION_MODEL"
        ordering = ["project__name", "name"]
        verbose_name = _("client application")
        indexes = [models.Index(fields=["project", "status"], name="medplum_client_project")]

    @property
    def reference(self) -> str:
        return self.reference_for(self.client_id)

    @staticmethod
    def reference_for(client_id: str) -> str:
        return f"ClientApplication/{client_id}"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE and self.project.active

    @property
    def is_confidential(self) -> bool:
        return self.client_type == self.CLIENT_CONFIDENTIAL

    @property
    def redirect_uri_list(self) -> list[str]:
        return stored_uris(self.redirect_uris)

    def is_usable(self, request: Any) -> bool:
        """DOT's hook: disabled clients and clients of inactive projects cannot be used."""
        return self.is_active

    def verify_secret(self, secret: str) -> bool:
        """Constant-time check against the current and the retiring secret (RFC 6749 §2.3.1)."""
        current = verify_client_secret(secret, self.client_secret)
        retiring = verify_client_secret(secret, self.retiring_secret)
        return current or retiring

    def redirect_uri_allowed(self, uri: str) -> bool:
        """Exact, character-for-character match against a registered URI (RFC 9700 §2.1, §4.1.3).

        The one exception is RFC 8252 §7.3: for a registered ``http://127.0.0.1`` or
        ``http://[::1]`` URI a native app may use any port; everything else must match exactly.
        """
        registered = self.redirect_uri_list
        return uri in registered or any(_same_loopback_uri(uri, r) for r in registered)

    def clean(self) -> None:
        errors: dict[str, Any] = {}

        def collect(field: str, func: Any, *args: Any) -> None:
            try:
                func(*args)
            except ValidationError as exc:
                errors.setdefault(field, []).extend(exc.error_list)

        self.redirect_uris = "\n".join(split_uris(self.redirect_uris))
        self.post_logout_redirect_uris = "\n".join(split_uris(self.post_logout_redirect_uris))
        self.allowed_origins = "\n".join(split_uris(self.allowed_origins))
        collect("redirect_uris", validate_redirect_uris, split_uris(self.redirect_uris))
        collect("post_logout_redirect_uris", validate_redirect_uris, split_uris(self.post_logout_redirect_uris),
                "Post-logout redirect URI")
        for origin in split_uris(self.allowed_origins):
            collect("allowed_origins", validate_origin, origin)
        if self.launch_uri:
            collect("launch_uri", validate_redirect_uri, self.launch_uri, "Launch URI")
        if self.jwks_uri:
            collect("jwks_uri", validate_redirect_uri, self.jwks_uri, "JWKS URI")
        if self.jwks is not None and not (isinstance(self.jwks, dict) and isinstance(self.jwks.get("keys"), list)):
            errors.setdefault("jwks", []).append(ValidationError(_('JWKS must be an object with a "keys" list.')))
        if self.client_type == self.CLIENT_PUBLIC and self.pkce_optional:
            errors.setdefault("pkce_optional", []).append(
                ValidationError(_("Public clients must use PKCE.")))
        if self.access_policy_id and self.project_id and self.access_policy.project_id != self.project_id:
            errors.setdefault("access_policy", []).append(
                ValidationError(_("The access policy belongs to another project.")))
        if errors:
            raise ValidationError(errors)


class SigningKey(models.Model):
    """A key that signs tokens. One ``active`` signer; ``inactive`` keys are still published
    in the JWKS so tokens they signed verify until the key is ``retired``."""

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active (signs new tokens)")
        INACTIVE = "inactive", _("Inactive (published for verification)")
        RETIRED = "retired", _("Retired (not published)")

    kid = models.CharField(_("key id"), max_length=64, unique=True)
    algorithm = models.CharField(_("algorithm"), max_length=8)
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.ACTIVE)
    private_key = models.TextField(_("encrypted private key"), editable=False)
    public_jwk = models.JSONField(_("public JWK"), editable=False)
    created = models.DateTimeField(_("created"), auto_now_add=True)
    retired_at = models.DateTimeField(_("retired at"), null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name = _("signing key")
        constraints = [
            models.UniqueConstraint(fields=["status"], condition=models.Q(status="active"),
                                    name="medplum_one_active_signing_key"),
        ]

    def __str__(self) -> str:
        return f"{self.kid} ({self.algorithm}, {self.status})"


class LaunchContext(models.Model):
    """A SMART EHR launch (SMART App Launch 2.2 §"EHR launch"): the patient (and encounter) an
    app is opened with, by ``launch_uri?iss=<FHIR base>&launch=<id>``.

    Single use and short-lived: ``/oauth2/authorize?launch=<id>`` of the same client binds it to
    the login (which keeps the references) and marks it used. Created by
    :func:`medplum_auth.services.create_launch`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="launches",
                                verbose_name=_("project"))
    client = models.ForeignKey(settings.OAUTH2_PROVIDER_APPLICATION_MODEL, on_delete=models.CASCADE,
                               related_name="launches", verbose_name=_("client"))
    patient = models.CharField(_("patient"), max_length=128, help_text=_("Patient/<id>"))
    encounter = models.CharField(_("encounter"), max_length=128, blank=True, help_text=_("Encounter/<id>"))
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+", verbose_name=_("created by"))
    created = models.DateTimeField(_("created"), auto_now_add=True)
    expires_at = models.DateTimeField(_("expires at"))
    used_at = models.DateTimeField(_("used at"), null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name = _("launch context")

    def __str__(self) -> str:
        return f"Launch {self.id}"


class Login(models.Model):
    """One authorization: a sign-in of a user (or a client, for client_credentials) to a client.

    It holds the authorization code (as a digest), the refresh-token family (current and
    previous digest) and is the unit of revocation: every token issued from it carries its id
    (``login_id``) and stops working the moment ``revoked_at`` is set.
    """

    class Method(models.TextChoices):
        PASSWORD = "password", _("Password")
        CLIENT = "client", _("Client credentials")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True,
                             related_name="medplum_logins")
    client = models.ForeignKey(settings.OAUTH2_PROVIDER_APPLICATION_MODEL, on_delete=models.CASCADE,
                               related_name="logins")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="logins")
    membership = models.ForeignKey(ProjectMembership, on_delete=models.CASCADE, null=True, blank=True,
                                   related_name="logins")
    auth_method = models.CharField(max_length=16, choices=Method.choices, default=Method.PASSWORD)
    auth_time = models.DateTimeField(_("authenticated at"))
    scope = models.TextField(_("scope"), blank=True)
    nonce = models.CharField(max_length=512, blank=True)
    redirect_uri = models.TextField(blank=True)
    code_digest = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)
    code_expires_at = models.DateTimeField(null=True, blank=True)
    code_redeemed_at = models.DateTimeField(null=True, blank=True)
    code_challenge = models.CharField(max_length=128, blank=True)
    code_challenge_method = models.CharField(max_length=8, blank=True)
    refresh_digest = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)
    previous_refresh_digest = models.CharField(max_length=64, null=True, blank=True, db_index=True,
                                               editable=False)
    refresh_rotated_at = models.DateTimeField(null=True, blank=True)
    refresh_expires_at = models.DateTimeField(null=True, blank=True)
    granted_at = models.DateTimeField(_("tokens first issued"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    revoked_reason = models.CharField(max_length=64, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=255, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    # SMART launch context: from an EHR launch (``launch``) or the standalone patient picker.
    launch = models.ForeignKey(LaunchContext, on_delete=models.SET_NULL, null=True, blank=True,
                               related_name="logins", verbose_name=_("EHR launch"))
    launch_patient = models.CharField(_("patient context"), max_length=128, blank=True,
                                      help_text=_("Patient/<id> chosen at launch (not the user's own profile)."))
    launch_encounter = models.CharField(_("encounter context"), max_length=128, blank=True)
    #: RFC 8176 authentication method references of the sign-in, space separated (``pwd otp mfa``).
    amr = models.CharField(_("authentication methods"), max_length=64, blank=True, default="")
    #: The JSON login API's second step is outstanding: no code until ``/auth/mfa/verify``.
    awaiting_mfa = models.BooleanField(_("awaiting second factor"), default=False)
    #: The user deselected every SMART resource scope the app asked for: the login reaches no FHIR
    #: data (a token without resource scopes would otherwise be governed by the policies alone).
    resource_scopes_withheld = models.BooleanField(_("data scopes withheld"), default=False)
    #: RFC 7638 thumbprint of the DPoP key this login's grant is bound to (RFC 9449): the
    #: authorization request's ``dpop_jkt`` until the code is redeemed, then a public client's
    #: refresh-token key (confidential clients' refresh tokens are bound by client authentication).
    dpop_jkt = models.CharField(_("DPoP key thumbprint"), max_length=64, blank=True, default="")

    class Meta:
        ordering = ["-created"]
        verbose_name = _("login")
        indexes = [models.Index(fields=["project", "revoked_at"], name="medplum_login_project")]

    def __str__(self) -> str:
        return f"Login {self.id}"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def profile(self) -> str | None:
        if self.membership_id:
            return self.membership.profile
        return None if self.user_id else f"ClientApplication/{self.client.client_id}"

    @property
    def patient_context(self) -> str | None:
        """``Patient/<id>`` the login acts for: the launch patient, else a Patient's own profile."""
        if self.launch_patient:
            return self.launch_patient
        if self.membership_id and self.membership.profile_type == ProfileType.PATIENT:
            return self.membership.profile
        return None


class Consent(models.Model):
    """Scopes a user has approved for a client; a later request for the same or fewer scopes
    skips the consent page (OIDC Core §3.1.2.4)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    client = models.ForeignKey(settings.OAUTH2_PROVIDER_APPLICATION_MODEL, on_delete=models.CASCADE,
                               related_name="consents")
    scope = models.TextField()
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "client"], name="medplum_consent_unique")]

    def __str__(self) -> str:
        return f"{self.user} → {self.client}: {self.scope}"


class UsedClientAssertion(models.Model):
    """``jti`` values of accepted private_key_jwt assertions, kept until they expire (RFC 7523 §3)."""

    jti_digest = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = _("used client assertion")

    def __str__(self) -> str:
        return self.jti_digest


class SecurityEventType(models.TextChoices):
    """The codes of :class:`SecurityEvent` (``subtype`` of the FHIR AuditEvent).

    Write events only through :func:`medplum_auth.audit.record`. The MFA and password-reset codes
    are defined for the flows that will call it; nothing in this app emits them yet.
    """

    SIGNIN_SUCCEEDED = "signin.succeeded", _("Sign-in succeeded")
    SIGNIN_FAILED = "signin.failed", _("Sign-in failed")
    MFA_ENROLLED = "mfa.enrolled", _("Second factor enrolled")
    MFA_VERIFIED = "mfa.verified", _("Second factor verified")
    MFA_FAILED = "mfa.failed", _("Second factor failed")
    MFA_DISABLED = "mfa.disabled", _("Second factor disabled")
    PASSWORD_RESET_REQUESTED = "password_reset.requested", _("Password reset requested")
    PASSWORD_RESET_COMPLETED = "password_reset.completed", _("Password reset completed")
    AUTHORIZATION_GRANTED = "authorization.granted", _("Authorization granted")
    AUTHORIZATION_DENIED = "authorization.denied", _("Authorization denied")
    TOKEN_ISSUED = "token.issued", _("Tokens issued")
    TOKEN_REFRESHED = "token.refreshed", _("Tokens refreshed")
    TOKEN_REVOKED = "token.revoked", _("Tokens revoked")
    REFRESH_TOKEN_REUSE = "token.refresh_reuse", _("Refresh token reuse detected (family revoked)")
    PROJECT_CREATED = "project.created", _("Project created")
    PROJECT_UPDATED = "project.updated", _("Project updated")
    CLIENT_CREATED = "client.created", _("Client created")
    CLIENT_UPDATED = "client.updated", _("Client updated")
    CLIENT_SECRET_ROTATED = "client.secret_rotated", _("Client secret rotated")
    CLIENT_SECRET_RETIRED = "client.secret_retired", _("Client retiring secret removed")
    CLIENT_DELETED = "client.deleted", _("Client deleted")
    ACCESS_POLICY_CREATED = "access_policy.created", _("Access policy created")
    ACCESS_POLICY_UPDATED = "access_policy.updated", _("Access policy updated")
    DEFAULT_POLICY_CHANGED = "access_policy.default_changed", _("Default access policy changed")
    MEMBERSHIP_INVITED = "membership.invited", _("Member invited")
    MEMBERSHIP_CHANGED = "membership.changed", _("Membership changed")
    MEMBERSHIP_REMOVED = "membership.removed", _("Member removed")
    SIGNING_KEY_ROTATED = "signing_key.rotated", _("Signing key rotated")
    SIGNING_KEY_RETIRED = "signing_key.retired", _("Signing key retired")
    LAUNCH_CREATED = "launch.created", _("EHR launch created")
    REGISTRATION_TOKEN_CREATED = "registration_token.created", _("Client registration token created")
    REGISTRATION_TOKEN_REVOKED = "registration_token.revoked", _("Client registration token revoked")


class SecurityEvent(models.Model):
    """One security event: who did what, as whom, from where, with what outcome. Append-only.

    Rows are written by :func:`medplum_auth.audit.record` and never updated; only
    ``medplum_prune_audit`` deletes them (after ``AUDIT_RETENTION_DAYS``). Nothing here refers to
    other rows by foreign-key constraint except loosely to the project, so the trail outlives the
    users, clients and memberships it names. No secret, token or password is ever stored.
    """

    class Outcome(models.IntegerChoices):
        """FHIR R4 ``AuditEvent.outcome`` (http://hl7.org/fhir/audit-event-outcome)."""

        SUCCESS = 0, _("Success")
        MINOR_FAILURE = 4, _("Minor failure")
        SERIOUS_FAILURE = 8, _("Serious failure")
        MAJOR_FAILURE = 12, _("Major failure")

    id = models.BigAutoField(primary_key=True)
    recorded = models.DateTimeField(_("recorded"))
    event_type = models.CharField(_("event"), max_length=48, choices=SecurityEventType.choices)
    outcome = models.PositiveSmallIntegerField(_("outcome"), choices=Outcome.choices, default=Outcome.SUCCESS)
    reason = models.CharField(_("reason"), max_length=64, blank=True,
                              help_text=_("Reason code; uniform for failed sign-ins (no account-existence leak)."))
    operator_reason = models.CharField(
        _("operator reason"), max_length=64, blank=True,
        help_text=_("Precise cause (e.g. unknown email); shown only in the Django admin, never to project admins."))
    # No constraint (events outlive what they name) and no index of its own: every index below starts
    # with the project, and each one is one more write on the token path.
    project = models.ForeignKey(Project, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False,
                                null=True, blank=True, related_name="+", verbose_name=_("project"))
    actor_user = models.CharField(_("user id"), max_length=64, blank=True)
    actor_membership = models.CharField(_("membership id"), max_length=64, blank=True)
    actor_profile = models.CharField(_("profile"), max_length=128, blank=True, help_text=_("e.g. Practitioner/<id>"))
    actor_client = models.CharField(_("client id"), max_length=255, blank=True)
    actor_display = models.CharField(_("actor"), max_length=255, blank=True)
    subject = models.CharField(_("subject"), max_length=255, blank=True, help_text=_("e.g. Login/<id>"))
    subject_display = models.CharField(_("subject display"), max_length=255, blank=True)
    remote_addr = models.GenericIPAddressField(_("remote address"), null=True, blank=True)
    user_agent = models.CharField(_("user agent"), max_length=255, blank=True)
    request_id = models.CharField(_("request id"), max_length=64, blank=True)
    detail = models.JSONField(_("detail"), default=dict, blank=True)

    class Meta:
        ordering = ["-recorded", "-id"]
        verbose_name = _("security event")
        indexes = [
            models.Index(fields=["project", "recorded", "id"], name="medplum_event_project"),
            models.Index(fields=["project", "event_type", "recorded"], name="medplum_event_type"),
            models.Index(fields=["project", "subject"], name="medplum_event_subject"),
            models.Index(fields=["project", "actor_user"], name="medplum_event_user"),
            # Failures only (a partial index: successful events, the token path's, never touch it).
            models.Index(fields=["project", "recorded"], condition=models.Q(outcome__gt=0),
                         name="medplum_event_failures"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} at {self.recorded:%Y-%m-%d %H:%M:%S}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise ValueError("Security events are append-only: they cannot be changed.")
        super().save(*args, **kwargs)

    @property
    def reference(self) -> str:
        return f"AuditEvent/{self.pk}"

    @property
    def is_success(self) -> bool:
        return self.outcome == self.Outcome.SUCCESS


class TotpDevice(models.Model):
    """A user's authenticator app (RFC 6238 TOTP): the shared secret, encrypted at rest.

    ``confirmed_at`` is set when the user proves the app works (a first valid code); until then
    the device is an enrollment in progress and is not asked for at sign-in. ``last_step`` is the
    time step of the last accepted code: a code is accepted once (no replay in its window).
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    secret = models.TextField(_("encrypted secret"), editable=False)
    confirmed_at = models.DateTimeField(_("enrolled at"), null=True, blank=True)
    last_step = models.BigIntegerField(default=0, editable=False)
    created = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("authenticator app")

    def __str__(self) -> str:
        return f"TOTP of user {self.user_id}"


class RecoveryCode(models.Model):
    """A single-use recovery code for a user who lost their second factor; stored as a digest."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    used_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("recovery code")

    def __str__(self) -> str:
        return f"Recovery code of user {self.user_id}" + (" (used)" if self.used_at else "")


class WebAuthnCredential(models.Model):
    """A security key or passkey registered as a user's second factor (W3C WebAuthn Level 2)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    #: base64url of the credential id the authenticator chose (at most 1,023 bytes).
    credential_id = models.CharField(max_length=1400, unique=True, editable=False)
    #: base64url of the COSE public key.
    public_key = models.TextField(editable=False)
    sign_count = models.PositiveBigIntegerField(default=0, editable=False)
    name = models.CharField(_("name"), max_length=100, blank=True)
    transports = models.CharField(max_length=200, blank=True, editable=False)
    created = models.DateTimeField(_("registered"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)

    class Meta:
        verbose_name = _("security key")

    def __str__(self) -> str:
        return self.name or f"Security key {self.pk}"


class PushedAuthorizationRequest(models.Model):
    """An authorization request a client pushed to ``/oauth2/par`` (RFC 9126), until its one use.

    Only the SHA-256 of the ``request_uri``'s random part is stored; the row is deleted when the
    authorization endpoint takes it, and expired rows are removed by ``medplum_cleanup``.
    """

    digest = models.CharField(max_length=64, unique=True, editable=False)
    client = models.ForeignKey(settings.OAUTH2_PROVIDER_APPLICATION_MODEL, on_delete=models.CASCADE,
                               related_name="+")
    parameters = models.JSONField(editable=False)
    expires_at = models.DateTimeField(db_index=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("pushed authorization request")

    def __str__(self) -> str:
        return f"Pushed authorization request of {self.client_id}"


class RegistrationToken(models.Model):
    """An initial access token (RFC 7591 §3): who holds it may register clients in the project.

    Issued by a project admin (Project Admin, ``medplum_create_registration_token``); only its
    SHA-256 is stored. Clients registered with it get its access policy.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="registration_tokens")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    label = models.CharField(_("label"), max_length=200, blank=True)
    access_policy = models.ForeignKey(AccessPolicy, on_delete=models.PROTECT, null=True, blank=True,
                                      related_name="+", verbose_name=_("access policy of registered clients"))
    created = models.DateTimeField(_("created"), auto_now_add=True)
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    class Meta:
        verbose_name = _("client registration token")

    def __str__(self) -> str:
        return self.label or f"Registration token {self.pk}"
