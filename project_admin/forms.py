"""The Project Admin forms: :mod:`medplum_auth.forms` with the project fixed, plus the preview.

Writes stay in the shared forms' ``save()`` (a :mod:`medplum_auth.services` call); these
subclasses only choose fields and labels for the pages.
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib.auth import forms as auth_forms
from django.forms.fields import InvalidJSONInput
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _

from medplum_auth.audit import client_address
from medplum_auth.forms import (
    AccessPolicyForm,
    ClientApplicationForm,
    MembershipForm,
    MembershipInviteForm,
    PolicyRulesField,
)
from medplum_auth.forms import (
    ClientCreateForm as BaseClientCreateForm,
)
from medplum_auth.models import AccessPolicy, ClientApplication, Project, ProjectMembership
from medplum_auth.signin import authenticate_email

REFERENCE_RE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}\Z")


class NoLabelSuffix:
    """Labels without Django's trailing colon ("Name", not "Name:"), as every other label of the pages.

    Only on these pages' forms: the shared :mod:`medplum_auth.forms` keep Django's default, so the
    Django admin stays consistent with itself.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]


class EmailAuthenticationForm(NoLabelSuffix, auth_forms.AuthenticationForm):
    """Django's sign-in form, by email, with the OAuth sign-in page's uniform error and throttling."""

    username = forms.EmailField(label=_("Email"), widget=forms.EmailInput(
        attrs={"autofocus": True, "autocomplete": "username"}))

    def clean(self) -> dict[str, Any]:
        email = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if email is not None and password:
            remote_addr = client_address(self.request) if self.request else None
            user, error = authenticate_email(email, password, remote_addr)
            if user is None:
                raise forms.ValidationError(error, code="invalid_login")
            user.backend = "django.contrib.auth.backends.ModelBackend"
            self.user_cache = user
            self.confirm_login_allowed(user)
        return self.cleaned_data


class SetPasswordForm(NoLabelSuffix, auth_forms.SetPasswordForm):
    """Django's set-password form (the invite link's page)."""


class TypedPolicyRulesField(PolicyRulesField):
    """The rules as typed: after an error the textarea shows the submitted text, not a reformatted copy."""

    def bound_data(self, data: Any, initial: Any) -> Any:
        if self.disabled or data is None:
            return super().bound_data(data, initial)
        return InvalidJSONInput(data)


class PolicyForm(NoLabelSuffix, AccessPolicyForm):
    """Name, description and the rules as JSON (the page shows them as a table too)."""

    resources = TypedPolicyRulesField(label=AccessPolicyForm.base_fields["resources"].label,
                                      help_text=AccessPolicyForm.base_fields["resources"].help_text)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["description"].widget.attrs["rows"] = 2
        self.fields["resources"].widget.attrs["rows"] = 20


def _lay_out_client_form(form: forms.BaseForm) -> None:
    form.fields["description"].widget.attrs["rows"] = 3
    for field in form.fields.values():
        field.label = capfirst(field.label)


class ClientCreateForm(NoLabelSuffix, BaseClientCreateForm):
    """The shared "Create New Client" form, laid out for the page."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _lay_out_client_form(self)


class ClientEditForm(NoLabelSuffix, ClientApplicationForm):
    """A client's settings; its status has the Disable/Enable buttons and its secret the Rotate button."""

    ADVANCED_FIELDS = ("access_token_lifetime", "refresh_token_lifetime", "allowed_origins",
                       "post_logout_redirect_uris", "launch_uri", "jwks_uri", "jwks", "authorization_grant_type",
                       "skip_authorization", "always_issue_refresh_token", "sign_in_text")

    class Meta(ClientApplicationForm.Meta):
        fields = [name for name in ClientApplicationForm.Meta.fields if name != "status"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _lay_out_client_form(self)


class InviteForm(NoLabelSuffix, MembershipInviteForm):
    """Invite a Patient or Practitioner; no password: the page hands out a set-password link."""

    PROFILE_TYPES = (("Patient", _("Patient")), ("Practitioner", _("Practitioner")))

    field_order = ["profile_type", "first_name", "last_name", "email", "access_policy", "admin"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields.pop("password", None)
        self.fields["profile_type"] = forms.ChoiceField(
            label=_("Profile type"), choices=self.PROFILE_TYPES, widget=forms.RadioSelect, initial="Patient")
        self.fields["admin"].label = _("Project admin")
        self.fields["admin"].help_text = _("May use these Project Admin pages for this project.")
        self.order_fields(self.field_order)


class MemberForm(NoLabelSuffix, MembershipForm):
    """A member's policy, parameters, admin flag and active flag."""


class PreviewForm(NoLabelSuffix, forms.Form):
    """Whose effective policy to show: a member, a client or a policy on its own; scopes; requests."""

    subject = forms.ChoiceField(label=_("Member, client or policy"))
    through = forms.ChoiceField(
        label=_("Signing in through client"), required=False,
        help_text=_("For a member or a policy: the app they sign in to. Its access policy restricts them too."))
    scopes = forms.CharField(
        label=_("Scopes"), required=False, max_length=2000,
        help_text=_("Optional, space separated, e.g. patient/Observation.rs openid. "
                    "Without SMART resource scopes the policy applies alone."))
    patient = forms.CharField(
        label=_("Patient context"), required=False, max_length=80,
        help_text=_("For patient/ scopes of a non-Patient member or a client, e.g. Patient/123 "
                    "(a Patient member's context is their own profile)."))
    profile = forms.CharField(
        label=_("Profile for a policy on its own"), required=False, max_length=80, initial="Patient/example",
        help_text=_("Fills %profile and %patient when previewing a policy that no member is chosen for."))
    requests = forms.CharField(
        label=_("FHIR requests"), required=False, max_length=4000,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text=_("One per line, e.g. GET Observation?subject=Patient/456 or PUT Patient/123."))

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project
        members = ProjectMembership.objects.filter(project=project).select_related("user", "access_policy")
        clients = ClientApplication.objects.filter(project=project).select_related("access_policy")
        policies = AccessPolicy.objects.filter(project=project)
        self.fields["subject"].choices = [
            ("", _("Choose…")),
            (_("Members"), [(f"member:{m.pk}", f"{m.profile_display or m.profile} ({m.profile_type}, "
                                               f"{m.access_policy or _('no policy')})") for m in members]),
            (_("Clients"), [(f"client:{c.pk}", f"{c.name} ({c.access_policy or _('no policy')})") for c in clients]),
            (_("Policies"), [(f"policy:{p.pk}", str(p)) for p in policies]),
        ]
        self.fields["through"].choices = [("", _("None (the member's policy alone)"))] + [
            (str(c.pk), f"{c.name} ({c.access_policy or _('no client policy')})") for c in clients]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("through") and str(data.get("subject", "")).startswith("client:"):
            self.add_error("through", _("A client acting for itself does not sign in through another client."))
        return data

    def _reference(self, name: str) -> str:
        value = (self.cleaned_data.get(name) or "").strip()
        if value and not REFERENCE_RE.match(value):
            raise forms.ValidationError(_("Enter a reference like Patient/123."), code="invalid_reference")
        return value

    def clean_patient(self) -> str:
        return self._reference("patient")

    def clean_profile(self) -> str:
        return self._reference("profile")

    def subject_object(self) -> ProjectMembership | ClientApplication | AccessPolicy:
        """The chosen member, client or policy (always of this project: the choices are)."""
        kind, _sep, pk = self.cleaned_data["subject"].partition(":")
        if kind == "policy":
            return AccessPolicy.objects.get(pk=pk, project=self.project)
        model = ProjectMembership if kind == "member" else ClientApplication
        return model.objects.select_related("access_policy").get(pk=pk, project=self.project)

    def through_object(self) -> ClientApplication | None:
        pk = self.cleaned_data.get("through")
        return ClientApplication.objects.select_related("access_policy").get(pk=pk, project=self.project) \
            if pk else None

    def request_lines(self) -> list[str]:
        return [line.strip() for line in (self.cleaned_data.get("requests") or "").splitlines() if line.strip()]


class AuditFilterForm(forms.Form):
    """Filters of the Audit log page (a GET form: bookmarkable, writes nothing)."""

    OUTCOMES = [("", _("Any outcome")), ("success", _("Success")), ("failure", _("Failure"))]

    event_type = forms.ChoiceField(label=_("Event"), required=False)
    outcome = forms.ChoiceField(label=_("Outcome"), choices=OUTCOMES, required=False)
    actor = forms.CharField(label=_("Actor or email"), required=False, max_length=255,
                            help_text=_("Part of an email or name, or a reference like Practitioner/123."))
    since = forms.DateField(label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label=_("To (inclusive)"), required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args: Any, **kwargs: Any):
        from medplum_auth.models import SecurityEventType

        super().__init__(*args, **kwargs)
        self.fields["event_type"].choices = [("", _("Any event")), *SecurityEventType.choices]

    def clean_actor(self) -> str:
        actor = self.cleaned_data["actor"].strip()
        if any(ord(char) < 32 for char in actor):
            raise forms.ValidationError(_("Enter text without control characters."))
        return actor

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            self.add_error("until", _("The end date is before the start date."))
        return data
