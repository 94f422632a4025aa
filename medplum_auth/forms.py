"""ModelForms for the identity model, shared by the Django admin and the Project Admin pages.

Each form's ``save()`` is a write path of :mod:`medplum_auth.services`: it creates or updates a
project, a client or a policy, invites a member or updates a membership. The forms validate
everything the services validate — the same validators, the model's ``clean()`` and every unique
constraint — so after ``is_valid()`` a service call fails only on a race. Callers still catch
``ValidationError`` from ``save()`` and hand it to :func:`add_service_error`.

Forms that work inside one project take ``project=``: the project is then fixed, not a field,
and the access-policy choices are that project's policies.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db.models import QuerySet
from django.forms.fields import InvalidJSONInput
from django.utils.translation import gettext_lazy as _

from . import policies, services
from .access import client_policy_rule
from .models import AccessPolicy, ClientApplication, Project, ProjectMembership
from .validators import validate_access_token_lifetime

URI_LIST_HELP = _("One per line. https only (http only for localhost and 127.0.0.1); matched exactly, "
                  "no fragments or wildcards.")

ACCESS_TOKEN_LIFETIME_HELP = _("Seconds; empty for the site's default (ACCESS_TOKEN_LIFETIME, one hour). More than "
                               "300: @medplum/core renews a token once less than 300 s are left.")


def add_service_error(form: forms.BaseForm, error: ValidationError) -> None:
    """Show a service's ``ValidationError`` on ``form``.

    Errors keyed by a field the form has go on that field; the rest become non-field errors
    prefixed with the key, so no message is lost when a page leaves a field out.
    """
    if not hasattr(error, "error_dict"):
        form.add_error(None, error)
        return
    for field, errors in error.error_dict.items():
        if field == NON_FIELD_ERRORS or field in form.fields:
            form.add_error(field if field != NON_FIELD_ERRORS else None, errors)
        else:
            form.add_error(None, [f"{field}: {message}" for message in ValidationError(errors).messages])


def _policy_label(policy: AccessPolicy) -> str:
    return f"{policy.name} ({policy.project})"


class ServiceModelForm(forms.ModelForm):
    """Base form: checks every unique constraint, also on fields the page fixes (e.g. the project).

    Django's ModelForm skips constraints that involve a field missing from the form, which
    would let ``(project, name)`` duplicates reach the service and fail after ``is_valid()``.
    """

    def validate_unique(self) -> None:
        exclude = {name for name in self.errors if name != NON_FIELD_ERRORS}
        try:
            self.instance.validate_unique(exclude=exclude)
            self.instance.validate_constraints(exclude=exclude)
        except ValidationError as exc:
            add_service_error(self, exc)

    def edited_values(self) -> dict[str, Any]:
        """The form's model fields as ``is_valid()`` set them on the instance, for an ``update_*`` service."""
        model_fields = {field.name for field in self.instance._meta.get_fields()}
        return {name: getattr(self.instance, name) for name in self.fields if name in model_fields}

    def _limit_policies(self, project: Project | None) -> None:
        """Offer only ``project``'s policies; the model's ``clean()`` enforces it server-side."""
        field = self.fields.get("access_policy")
        if field is None:
            return
        if isinstance(self.instance, ClientApplication):
            field.help_text = client_policy_rule()
        queryset: QuerySet[AccessPolicy] = AccessPolicy.objects.select_related("project")
        if project is not None:
            field.queryset = queryset.filter(project=project)
            field.label_from_instance = str
        else:
            field.queryset = queryset
            field.label_from_instance = _policy_label


class PolicyRulesField(forms.JSONField):
    """Access-policy rules as pretty-printed JSON in a textarea.

    Parsed and normalised by :func:`medplum_auth.policies.parse_policy_json`, so the page shows
    the same message as the API and the CLI (invalid JSON, unknown interaction …).
    """

    widget = forms.Textarea(attrs={"rows": 16, "cols": 90, "spellcheck": "false", "class": "vLargeTextField"})

    def to_python(self, value: Any) -> Any:
        if self.disabled:
            return value
        if value in self.empty_values:
            return None
        if isinstance(value, str | bytes):
            return policies.parse_policy_json(value)
        return policies.validate_rules(value)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False)


class ProjectForm(ServiceModelForm):
    """Create or update a project through ``services.create_project`` / ``update_project``."""

    class Meta:
        model = Project
        fields = ["name", "description", "owner", "active"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance._state.adding:
            # New projects start active; create_project has no switch for it.
            self.fields.pop("active", None)

    def save(self, commit: bool = True) -> Project:
        if not commit:
            return super().save(commit=False)
        if self.instance._state.adding:
            data = self.cleaned_data
            self.instance = services.create_project(data["name"], description=data.get("description", ""),
                                                    owner=data.get("owner"))
        else:
            self.instance = services.update_project(self.instance, **self.edited_values())
        self.save_m2m = lambda: None
        return self.instance


class AccessPolicyForm(ServiceModelForm):
    """Create or update a policy through ``services.create_access_policy`` / ``update_access_policy``."""

    resources = PolicyRulesField(
        label=_("Rules"),
        help_text=_('JSON list of rules, e.g. [{"resourceType": "Observation", '
                    '"criteria": "Observation?subject=%patient", "interaction": ["read", "search"]}]. '
                    "Interactions: create, read, vread, update, delete, history, search."),
    )

    class Meta:
        model = AccessPolicy
        fields = ["project", "name", "description", "resources"]

    def __init__(self, *args: Any, project: Project | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if project is not None:
            self.instance.project = project
            self.fields.pop("project", None)

    def save(self, commit: bool = True) -> AccessPolicy:
        if not commit:
            return super().save(commit=False)
        data = self.cleaned_data
        if self.instance._state.adding:
            self.instance = services.create_access_policy(
                self.instance.project, data["name"], data["resources"], description=data.get("description", ""))
        else:
            self.instance = services.update_access_policy(
                self.instance, name=data.get("name"), rules=data.get("resources"),
                description=data.get("description"))
        self.save_m2m = lambda: None
        return self.instance


class _ClientFormBase(ServiceModelForm):
    # Declared so the scheme default is explicit (Django 6 changes it); the model's clean()
    # then requires https.
    launch_uri = forms.URLField(label=_("launch URI"), required=False, max_length=2000, assume_scheme="https",
                                help_text=ClientApplication._meta.get_field("launch_uri").help_text)
    jwks_uri = forms.URLField(label=_("JWKS URI"), required=False, max_length=2000, assume_scheme="https",
                              help_text=ClientApplication._meta.get_field("jwks_uri").help_text)

    class Meta:
        model = ClientApplication
        fields: list[str] = []
        widgets = {
            "redirect_uris": forms.Textarea(attrs={"rows": 3, "cols": 80, "spellcheck": "false"}),
            "post_logout_redirect_uris": forms.Textarea(attrs={"rows": 2, "cols": 80, "spellcheck": "false"}),
            "allowed_origins": forms.Textarea(attrs={"rows": 2, "cols": 80, "spellcheck": "false"}),
            "client_type": forms.RadioSelect,
        }
        help_texts = {
            "redirect_uris": URI_LIST_HELP,
            "post_logout_redirect_uris": URI_LIST_HELP,
            "allowed_origins": _("CORS origins, one per line, as scheme://host[:port] with no path."),
            "pkce_optional": _("Warning: not recommended. Without PKCE a stolen authorization code can be "
                               "redeemed (RFC 9700 §2.1.1). Only for confidential legacy clients that "
                               "cannot send a code_challenge."),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "name" in self.fields:
            self.fields["name"].required = True
        if "access_token_lifetime" in self.fields:
            self.fields["access_token_lifetime"].help_text = ACCESS_TOKEN_LIFETIME_HELP

    def clean_access_token_lifetime(self) -> int | None:
        """More than 300 s (@medplum/core's refreshGracePeriod) when set or changed here.

        A shorter value stored earlier (through the services) does not block other edits;
        ``check --database default`` reports it (``medplum_auth.W012``).
        """
        value = self.cleaned_data.get("access_token_lifetime")
        if "access_token_lifetime" in self.changed_data:
            validate_access_token_lifetime(value)
        return value


class ClientCreateForm(_ClientFormBase):
    """The "Create New Client" form.

    ``save()`` calls ``services.create_client`` and leaves the plaintext secret on
    ``self.secret`` (``None`` for a public client) for the caller to show once.
    """

    ADVANCED_FIELDS = ("access_token_lifetime", "refresh_token_lifetime", "allowed_origins",
                       "post_logout_redirect_uris", "launch_uri", "jwks_uri")

    class Meta(_ClientFormBase.Meta):
        fields = ["project", "name", "description", "redirect_uris", "access_policy", "client_type",
                  "pkce_optional", "access_token_lifetime", "refresh_token_lifetime", "allowed_origins",
                  "post_logout_redirect_uris", "launch_uri", "jwks_uri"]

    def __init__(self, *args: Any, project: Project | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.secret: str | None = None
        if project is not None:
            self.instance.project = project
            self.fields.pop("project", None)
        self._limit_policies(project)

    def save(self, commit: bool = True) -> ClientApplication:
        if not commit:
            return super().save(commit=False)
        data = self.cleaned_data
        advanced = {name: data[name] for name in self.ADVANCED_FIELDS if name in data}
        client, secret = services.create_client(
            self.instance.project,
            data["name"],
            redirect_uris=data.get("redirect_uris", ""),
            public=data.get("client_type") == ClientApplication.CLIENT_PUBLIC,
            pkce_optional=bool(data.get("pkce_optional")),
            access_policy=data.get("access_policy"),
            description=data.get("description", ""),
            **advanced,
        )
        self.instance, self.secret = client, secret
        self.save_m2m = lambda: None
        return client


class ClientApplicationForm(_ClientFormBase):
    """Edit a client's settings through ``services.update_client``.

    Never touches its secret: rotate with ``services.rotate_client_secret``. Switching the
    status off revokes the client's active logins.
    """

    class Meta(_ClientFormBase.Meta):
        fields = ["name", "description", "status", "redirect_uris", "post_logout_redirect_uris", "allowed_origins",
                  "launch_uri", "access_policy", "pkce_optional", "authorization_grant_type", "skip_authorization",
                  "always_issue_refresh_token", "require_pushed_authorization_requests", "dpop_bound_access_tokens",
                  "access_token_lifetime",
                  "refresh_token_lifetime", "jwks_uri", "jwks", "sign_in_text"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limit_policies(self.instance.project if self.instance.project_id else None)

    def save(self, commit: bool = True) -> ClientApplication:
        if not commit:
            return super().save(commit=False)
        self.instance = services.update_client(self.instance, **self.edited_values())
        self.save_m2m = lambda: None
        return self.instance


class MembershipInviteForm(ServiceModelForm):
    """Add a member through ``services.invite_member`` (creating the user when the email is new).

    ``save()`` returns the membership and leaves the :class:`~medplum_auth.services.Invitation`
    on ``self.invitation``.
    """

    email = forms.EmailField(label=_("email"))
    first_name = forms.CharField(label=_("first name"), max_length=150)
    last_name = forms.CharField(label=_("last name"), max_length=150)
    password = forms.CharField(
        label=_("password"), required=False, strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}, render_value=False),
        help_text=_("Optional, for a new user only. Leave empty to create the user without a usable "
                    "password. An invite never changes an existing user's password."),
    )

    field_order = ["project", "email", "first_name", "last_name", "profile_type", "access_policy", "admin",
                   "password"]

    class Meta:
        model = ProjectMembership
        fields = ["project", "profile_type", "access_policy", "admin"]

    def __init__(self, *args: Any, project: Project | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.invitation: services.Invitation | None = None
        if project is not None:
            self.instance.project = project
            self.fields.pop("project", None)
        self._limit_policies(project)
        if "access_policy" in self.fields:
            self.fields["access_policy"].help_text = _(
                "Leave empty to use the project's default policy for the profile type.")

    def save(self, commit: bool = True) -> ProjectMembership:
        if not commit:
            return super().save(commit=False)
        data = self.cleaned_data
        self.invitation = services.invite_member(
            self.instance.project,
            data["email"],
            profile_type=data["profile_type"],
            first_name=data["first_name"],
            last_name=data["last_name"],
            password=data.get("password") or None,
            admin=bool(data.get("admin")),
            access_policy=data.get("access_policy"),
        )
        self.instance = self.invitation.membership
        self.save_m2m = lambda: None
        return self.instance


class MembershipForm(ServiceModelForm):
    """Edit a membership's access through ``services.update_membership``.

    Policy, admin flag, active flag and policy parameters; deactivating revokes the
    membership's active logins.
    """

    class Meta:
        model = ProjectMembership
        fields = ["access_policy", "admin", "active", "access_parameters"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limit_policies(self.instance.project if self.instance.project_id else None)

    def save(self, commit: bool = True) -> ProjectMembership:
        if not commit:
            return super().save(commit=False)
        self.instance = services.update_membership(self.instance, **self.edited_values())
        self.save_m2m = lambda: None
        return self.instance
