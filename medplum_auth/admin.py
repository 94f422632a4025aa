"""Django admin for the identity model.

Every write goes through :mod:`medplum_auth.services`, via the forms of :mod:`medplum_auth.forms`
or directly from an action; a ``ValidationError`` from a service is shown on the form or as a
message, and nothing is saved. Client secrets are shown once (Post/Redirect/Get: the creating or
rotating POST answers 303, and one GET shows the secret with ``Cache-Control: no-store``) and
never again: change pages show neither a secret nor its digest, and signing keys never show
their (encrypted) private key.
"""

from __future__ import annotations

import json
from typing import Any

# DOT's admin module registers DOT's ApplicationAdmin for our swapped model, which would show
# the secret field. Importing it here forces its registrations before we replace that one,
# whatever the order of INSTALLED_APPS.
import oauth2_provider.admin  # noqa: F401
import oauth2_provider.models
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.exceptions import DisallowedModelAdminToField
from django.contrib.admin.options import IS_POPUP_VAR, TO_FIELD_VAR
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.cache import add_never_cache_headers
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from . import onetime, services
from .forms import (
    AccessPolicyForm,
    ClientApplicationForm,
    ClientCreateForm,
    MembershipForm,
    MembershipInviteForm,
    ProjectForm,
    add_service_error,
)
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
    SecurityEvent,
    SigningKey,
    TotpDevice,
    WebAuthnCredential,
)

SECRET_TEMPLATE = "admin/medplum_auth/clientapplication/secret.html"


class HttpResponseSeeOther(HttpResponseRedirect):
    """303: the browser follows with a GET, so reloading the next page never re-sends the POST."""

    status_code = 303


def _error_text(exc: ValidationError) -> str:
    return " ".join(exc.messages)


class ServiceAdmin(admin.ModelAdmin):
    """A ModelAdmin whose writes are the forms' ``save()``, i.e. a service call.

    The add view is a straight line (validate → service → response) so that a
    ``ValidationError`` raised by the service lands on the form instead of becoming a 500,
    and the add form can differ from the change form (``add_form`` / ``add_fieldsets``).
    """

    add_form: type[ModelForm] | None = None
    add_fieldsets: Any = None
    add_title: Any = None

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None and self.add_fieldsets is not None:
            return self.add_fieldsets
        return super().get_fieldsets(request, obj)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None and self.add_form is not None:
            kwargs.setdefault("form", self.add_form)
        return super().get_form(request, obj, change=change, **kwargs)

    def get_inline_instances(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        # The service add view renders no inlines; they edit an existing object.
        return super().get_inline_instances(request, obj) if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # The form's save() is the service call; ``obj`` is form.instance, updated in place.
        form.save()

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict[str, Any] | None = None) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ValidationError as exc:
            # Only on a race: the forms check what the services check. Django's atomic block
            # has rolled the change back.
            self.message_user(request, _error_text(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    @method_decorator(sensitive_post_parameters("password"))
    def add_view(self, request: HttpRequest, form_url: str = "",
                 extra_context: dict[str, Any] | None = None) -> HttpResponse:
        to_field = request.POST.get(TO_FIELD_VAR, request.GET.get(TO_FIELD_VAR))
        if to_field and not self.to_field_allowed(request, to_field):
            raise DisallowedModelAdminToField(f"The field {to_field} cannot be referenced.")
        if not self.has_add_permission(request):
            raise PermissionDenied
        form_class = self.get_form(request, None, change=False)
        if request.method == "POST":
            form = form_class(request.POST, request.FILES)
            if form.is_valid():
                try:
                    obj = form.save()
                except ValidationError as exc:
                    add_service_error(form, exc)
                else:
                    self.log_addition(request, obj, self.construct_change_message(request, form, None, add=True))
                    return self.response_service_add(request, obj, form)
        else:
            form = form_class(initial=self.get_changeform_initial_data(request))

        admin_form = helpers.AdminForm(form, list(self.get_fieldsets(request, None)),
                                       self.get_prepopulated_fields(request, None),
                                       self.get_readonly_fields(request, None), model_admin=self)
        context = {
            **self.admin_site.each_context(request),
            "title": self.add_title or _("Add %s") % self.opts.verbose_name,
            "subtitle": None,
            "adminform": admin_form,
            "object_id": None,
            "original": None,
            "is_popup": IS_POPUP_VAR in request.POST or IS_POPUP_VAR in request.GET,
            "to_field": to_field,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": self.get_preserved_filters(request),
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return self.render_change_form(request, context, add=True, form_url=form_url)

    def response_service_add(self, request: HttpRequest, obj: Any, form: Any) -> HttpResponse:
        return self.response_add(request, obj)


# --- Projects ---------------------------------------------------------------------------------


class DefaultAccessPolicyInline(admin.TabularInline):
    """Default policy per profile type, chosen among the project's own policies."""

    model = DefaultAccessPolicy
    extra = 0
    fields = ("profile_type", "access_policy")

    def get_formset(self, request: HttpRequest, obj: Project | None = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        field = formset.form.base_fields["access_policy"]
        field.queryset = AccessPolicy.objects.filter(project=obj) if obj is not None else AccessPolicy.objects.none()
        return formset


@admin.register(Project)
class ProjectAdmin(ServiceAdmin):
    form = ProjectForm
    add_form = ProjectForm
    add_fieldsets = ((None, {"fields": ("name", "description", "owner")}),)
    fieldsets = (
        (None, {"fields": ("name", "description", "owner", "active", "mfa_required")}),
        (_("Record"), {"fields": ("reference", "created", "updated")}),
    )
    readonly_fields = ("reference", "created", "updated")
    list_display = ("name", "active", "mfa_required", "member_count", "client_count", "created")
    list_filter = ("active",)
    search_fields = ("name",)
    raw_id_fields = ("owner",)
    inlines = (DefaultAccessPolicyInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Project]:
        return super().get_queryset(request).annotate(
            member_count=Count("memberships", distinct=True), client_count=Count("clients", distinct=True))

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not DefaultAccessPolicy:
            super().save_formset(request, form, formset, change)
            return
        # Defaults are keyed by profile type, so apply the final mapping through the service
        # rather than row by row (rows may swap types).
        project = form.instance
        deleted = set(map(id, formset.deleted_forms))
        wanted = {f.cleaned_data["profile_type"]: f.cleaned_data["access_policy"]
                  for f in formset.forms if id(f) not in deleted and f.cleaned_data.get("profile_type")}
        before = {f.initial["profile_type"] for f in formset.initial_forms if f.initial.get("profile_type")}
        for profile_type in sorted(before - set(wanted)):
            services.set_default_access_policy(project, profile_type, None)
        for profile_type, policy in sorted(wanted.items()):
            services.set_default_access_policy(project, profile_type, policy)
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    @admin.display(description=_("members"), ordering="member_count")
    def member_count(self, obj: Project) -> int:
        return obj.member_count  # type: ignore[attr-defined]

    @admin.display(description=_("clients"), ordering="client_count")
    def client_count(self, obj: Project) -> int:
        return obj.client_count  # type: ignore[attr-defined]


# --- Access policies --------------------------------------------------------------------------


@admin.register(AccessPolicy)
class AccessPolicyAdmin(ServiceAdmin):
    form = AccessPolicyForm
    add_form = AccessPolicyForm
    add_fieldsets = ((None, {"fields": ("project", "name", "description", "resources")}),)
    fieldsets = (
        (None, {"fields": ("project", "name", "description", "resources")}),
        (_("Record"), {"fields": ("reference", "created", "updated")}),
    )
    list_display = ("name", "project", "rule_count", "updated")
    list_filter = ("project",)
    list_select_related = ("project",)
    search_fields = ("name",)

    def get_readonly_fields(self, request: HttpRequest, obj: AccessPolicy | None = None) -> tuple[str, ...]:
        # Moving a policy would leave members and clients of the old project pointing at it.
        return ("project", "reference", "created", "updated") if obj is not None else ()

    @admin.display(description=_("rules"))
    def rule_count(self, obj: AccessPolicy) -> int:
        return len(obj.resources or [])


# --- Memberships ------------------------------------------------------------------------------


@admin.register(ProjectMembership)
class ProjectMembershipAdmin(ServiceAdmin):
    form = MembershipForm
    add_form = MembershipInviteForm
    add_title = _("Invite member")
    add_fieldsets = (
        (None, {"fields": ("project", "email", "first_name", "last_name", "profile_type")}),
        (_("Access"), {"fields": ("access_policy", "admin")}),
        (_("Password"), {"fields": ("password",)}),
    )
    fieldsets = (
        (None, {"fields": ("project", "user", "profile_type", "profile_reference", "profile_display")}),
        (_("Access"), {"fields": ("access_policy", "admin", "active", "access_parameters")}),
        (_("Record"), {"fields": ("reference", "created", "updated")}),
    )
    list_display = ("profile_display", "profile_reference", "user_email", "project", "admin", "active",
                    "access_policy")
    list_filter = ("project", "profile_type", "admin", "active")
    list_select_related = ("project", "user", "access_policy")
    search_fields = ("user__email", "profile_display")
    raw_id_fields = ("user",)

    def get_readonly_fields(self, request: HttpRequest, obj: ProjectMembership | None = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        return ("project", "user", "profile_type", "profile_reference", "profile_display", "reference",
                "created", "updated")

    @admin.display(description=_("profile"), ordering="profile_type")
    def profile_reference(self, obj: ProjectMembership) -> str:
        return obj.profile

    @admin.display(description=_("email"), ordering="user__email")
    def user_email(self, obj: ProjectMembership) -> str:
        return obj.user.email

    def response_service_add(self, request: HttpRequest, obj: Any, form: Any) -> HttpResponse:
        if form.invitation is not None and not form.invitation.created_user:
            self.message_user(request, _("The email belongs to an existing user, who was added to the project."))
        return super().response_service_add(request, obj, form)


# --- Client applications ----------------------------------------------------------------------


if admin.site.is_registered(ClientApplication):
    admin.site.unregister(ClientApplication)

# Tokens live on Login (digests only; access tokens are JWTs and never stored): django-oauth-
# toolkit's token tables stay empty, and their admins would only mislead an operator.
for _dot_model in (oauth2_provider.models.get_access_token_model(), oauth2_provider.models.get_refresh_token_model(),
                   oauth2_provider.models.get_id_token_model(), oauth2_provider.models.get_grant_model()):
    if admin.site.is_registered(_dot_model):
        admin.site.unregister(_dot_model)


@admin.register(ClientApplication)
class ClientApplicationAdmin(ServiceAdmin):
    """Clients, with their secret shown exactly once: on creation and on rotation."""

    form = ClientApplicationForm
    add_form = ClientCreateForm
    add_title = _("Create new client")
    add_fieldsets = (
        (None, {"fields": ("project", "name", "description", "redirect_uris", "access_policy", "client_type",
                           "pkce_optional")}),
        (_("Advanced"), {"classes": ("collapse",), "fields": ClientCreateForm.ADVANCED_FIELDS}),
    )
    fieldsets = (
        (None, {"fields": ("project", "name", "description", "client_id", "client_type", "status")}),
        (_("Redirects"), {"fields": ("redirect_uris", "post_logout_redirect_uris", "allowed_origins",
                                     "launch_uri")}),
        (_("Access"), {"fields": ("access_policy", "pkce_optional", "authorization_grant_type",
                                  "skip_authorization", "always_issue_refresh_token",
                                  "require_pushed_authorization_requests", "dpop_bound_access_tokens")}),
        (_("Secret"), {"fields": ("has_retiring_secret", "secret_rotated_at")}),
        (_("Advanced"), {"classes": ("collapse",), "fields": (
            "access_token_lifetime", "refresh_token_lifetime", "jwks_uri", "jwks", "sign_in_text",
            "registration_source", "created", "updated")}),
    )
    # Belt and braces: these are editable=False already, so no form shows them.
    exclude = ("client_secret", "retiring_secret", "hash_client_secret")
    list_display = ("name", "client_id", "project", "client_type", "status", "access_policy", "created")
    list_filter = ("project", "client_type", "status")
    list_select_related = ("project", "access_policy")
    search_fields = ("name", "client_id")
    actions = ("rotate_secret", "retire_old_secret", "disable_clients", "enable_clients")

    def get_readonly_fields(self, request: HttpRequest, obj: ClientApplication | None = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        # The type and project are fixed: a secret and tokens were issued under them.
        return ("project", "client_id", "client_type", "has_retiring_secret", "secret_rotated_at",
                "registration_source", "created", "updated")

    @admin.display(description=_("has retiring secret"))
    def has_retiring_secret(self, obj: ClientApplication) -> str:
        return _("yes") if obj.retiring_secret else _("no")

    def get_urls(self) -> list[URLPattern]:
        name = f"{self.opts.app_label}_{self.opts.model_name}_secret"
        return [
            path("<path:object_id>/secret/<str:token>/", self.admin_site.admin_view(self.secret_view), name=name),
            *super().get_urls(),
        ]

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, Any, set[Any], Any]:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        # Logins and consents are view-only here, but delete_client revokes and removes them
        # with the client, so they must not block the deletion.
        owned = {str(Login._meta.verbose_name), str(Consent._meta.verbose_name)}
        return deleted, counts, {perm for perm in perms_needed if str(perm) not in owned}, protected

    def delete_model(self, request: HttpRequest, obj: ClientApplication) -> None:
        services.delete_client(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ClientApplication]) -> None:
        for client in queryset:
            services.delete_client(client)

    def response_service_add(self, request: HttpRequest, obj: Any, form: Any) -> HttpResponse:
        if form.secret is None:
            return super().response_service_add(request, obj, form)
        return self.redirect_to_secret(request, obj, form.secret)

    @sensitive_variables("secret")
    def redirect_to_secret(self, request: HttpRequest, client: ClientApplication, secret: str, *,
                           rotated: bool = False) -> HttpResponse:
        """Post/Redirect/Get: keep ``secret`` for exactly one GET of :meth:`secret_view`; answer 303."""
        token = onetime.stash(request, "client-secret", client.pk, {"secret": secret, "rotated": rotated})
        return HttpResponseSeeOther(reverse(f"{self.admin_site.name}:medplum_auth_clientapplication_secret",
                                            args=[client.pk, token]))

    @sensitive_variables("secret")
    def secret_view(self, request: HttpRequest, object_id: str, token: str) -> HttpResponse:
        """Show the secret kept by :meth:`redirect_to_secret` once; a reload shows that it is gone."""
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        client = self.get_object(request, unquote(object_id))
        if client is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, client):
            raise PermissionDenied
        entry = onetime.take(request, token, "client-secret", client.pk) or {}
        secret = entry.get("secret") if isinstance(entry.get("secret"), str) else None
        rotated = bool(entry.get("rotated"))
        title = _("Client secret rotated") if rotated else _("Client created") if entry else _("Client secret")
        return self.render_secret(request, client, secret, title=title, rotated=rotated)

    @sensitive_variables("secret")
    def render_secret(self, request: HttpRequest, client: ClientApplication, secret: str | None, *, title: Any,
                      rotated: bool = False) -> HttpResponse:
        """The one page that ever shows ``secret`` (or, with ``None``, says it was shown); never cached."""
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": str(client),
            "opts": self.opts,
            "client": client,
            "secret": secret,
            "rotated": rotated,
            "change_url": reverse(f"{self.admin_site.name}:medplum_auth_clientapplication_change", args=[client.pk]),
        }
        request.current_app = self.admin_site.name
        response = TemplateResponse(request, SECRET_TEMPLATE, context)
        add_never_cache_headers(response)
        response["Pragma"] = "no-cache"
        return response

    @admin.action(description=_("Rotate secret (shows the new secret once)"), permissions=["change"])
    @sensitive_variables("secret")
    def rotate_secret(self, request: HttpRequest, queryset: QuerySet[ClientApplication]) -> HttpResponse | None:
        clients = list(queryset[:2])
        if len(clients) != 1:
            self.message_user(request, _("Select exactly one client to rotate its secret."), messages.ERROR)
            return None
        client = clients[0]
        try:
            secret = services.rotate_client_secret(client)
        except ValidationError as exc:
            self.message_user(request, _error_text(exc), messages.ERROR)
            return None
        self.log_change(request, client, _("Rotated the client secret; the previous one is retiring."))
        return self.redirect_to_secret(request, client, secret, rotated=True)

    @admin.action(description=_("Retire old secret (stop accepting the previous secret)"), permissions=["change"])
    def retire_old_secret(self, request: HttpRequest, queryset: QuerySet[ClientApplication]) -> None:
        count = 0
        for client in queryset.exclude(retiring_secret=""):
            services.retire_client_secret(client)
            self.log_change(request, client, _("Retired the previous client secret."))
            count += 1
        self.message_user(request, ngettext("Retired the old secret of %d client.",
                                            "Retired the old secrets of %d clients.", count) % count)

    def _set_status(self, request: HttpRequest, queryset: QuerySet[ClientApplication], status: str) -> int:
        count = 0
        for client in queryset.exclude(status=status):
            services.set_client_status(client, status)
            self.log_change(request, client, _("Set status to %s.") % status)
            count += 1
        return count

    @admin.action(description=_("Disable selected clients (revokes their logins)"), permissions=["change"])
    def disable_clients(self, request: HttpRequest, queryset: QuerySet[ClientApplication]) -> None:
        count = self._set_status(request, queryset, ClientApplication.Status.OFF)
        self.message_user(request, ngettext("Disabled %d client and revoked its logins.",
                                            "Disabled %d clients and revoked their logins.", count) % count)

    @admin.action(description=_("Enable selected clients"), permissions=["change"])
    def enable_clients(self, request: HttpRequest, queryset: QuerySet[ClientApplication]) -> None:
        count = self._set_status(request, queryset, ClientApplication.Status.ACTIVE)
        self.message_user(request, ngettext("Enabled %d client.", "Enabled %d clients.", count) % count)


# --- Signing keys -----------------------------------------------------------------------------


@admin.register(SigningKey)
class SigningKeyAdmin(admin.ModelAdmin):
    """Read-only keys; rotation and retirement only through the services.

    Key material is never entered or shown here: the private key is not rendered, not even
    encrypted. Actions need the ``change`` permission, although the pages are view-only.
    """

    fields = ("kid", "algorithm", "status", "created", "retired_at", "public_key")
    readonly_fields = fields
    exclude = ("private_key",)
    list_display = ("kid", "algorithm", "status", "created", "retired_at")
    list_filter = ("status", "algorithm")
    search_fields = ("kid",)
    actions = ("rotate_keys", "retire_keys")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SigningKey | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SigningKey | None = None) -> bool:
        # Deleting a key would break verification of the tokens it signed; retire it instead.
        return False

    def has_rotate_permission(self, request: HttpRequest) -> bool:
        codename = get_permission_codename("change", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    @admin.display(description=_("public JWK"))
    def public_key(self, obj: SigningKey) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.public_jwk, indent=2, sort_keys=True))

    @admin.action(description=_("Rotate signing keys (new active key; select any key)"), permissions=["rotate"])
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[SigningKey]) -> None:
        try:
            key = services.rotate_signing_keys()
        except ValidationError as exc:
            self.message_user(request, _error_text(exc), messages.ERROR)
            return
        self.log_addition(request, key, _("Rotated signing keys."))
        self.message_user(request, _("New active signing key %(kid)s; the previous key stays published "
                                     "until retired.") % {"kid": key.kid}, messages.SUCCESS)

    @admin.action(description=_("Retire selected inactive keys"), permissions=["rotate"])
    def retire_keys(self, request: HttpRequest, queryset: QuerySet[SigningKey]) -> None:
        retired = 0
        for key in queryset.exclude(status=SigningKey.Status.RETIRED):
            try:
                services.retire_signing_key(key.kid)
            except ValidationError as exc:
                self.message_user(request, f"{key.kid}: {_error_text(exc)}", messages.ERROR)
                continue
            self.log_change(request, key, _("Retired the signing key."))
            retired += 1
        if retired:
            self.message_user(request, ngettext("Retired %d signing key.", "Retired %d signing keys.",
                                                retired) % retired, messages.SUCCESS)



# --- Logins and consents ----------------------------------------------------------------------


class ViewOnlyAdmin(admin.ModelAdmin):
    """Records written by the OAuth flows; the admin only looks at them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Login)
class LoginAdmin(ViewOnlyAdmin):
    """Sign-ins, without their code and refresh-token digests."""

    fields = ("id", "project", "client", "user", "membership", "auth_method", "auth_time", "scope",
              "granted_at", "last_refreshed_at", "refresh_expires_at", "revoked_at", "revoked_reason",
              "launch", "launch_patient", "launch_encounter", "remote_addr", "user_agent", "created")
    readonly_fields = fields
    exclude = ("code_digest", "refresh_digest", "previous_refresh_digest", "code_challenge", "nonce")
    list_display = ("id", "project", "client", "user", "auth_method", "created", "revoked_at")
    list_filter = ("project", "auth_method")
    list_select_related = ("project", "client", "user")
    search_fields = ("user__email", "client__client_id", "client__name")
    raw_id_fields = ("user", "client", "membership")
    actions = ["revoke_selected"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.{get_permission_codename('change', self.opts)}")

    @admin.action(description=_("Revoke selected logins (their tokens stop working at once)"),
                  permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Login]) -> None:
        revoked = sum(services.revoke_login(login, reason="admin_revoked") for login in queryset)
        self.message_user(request, ngettext("%(count)d login revoked.", "%(count)d logins revoked.", revoked)
                          % {"count": revoked}, messages.SUCCESS)


@admin.register(LaunchContext)
class LaunchContextAdmin(ViewOnlyAdmin):
    """SMART EHR launches (created by ``POST /auth/launch`` and the Project Admin)."""

    fields = ("id", "project", "client", "patient", "encounter", "created_by", "created", "expires_at", "used_at")
    readonly_fields = fields
    list_display = ("id", "project", "client", "patient", "created", "used_at")
    list_filter = ("project",)
    list_select_related = ("project", "client")


@admin.register(Consent)
class ConsentAdmin(ViewOnlyAdmin):
    fields = ("user", "client", "scope", "updated")
    readonly_fields = fields
    list_display = ("user", "client", "scope", "updated")
    list_select_related = ("user", "client")
    search_fields = ("user__email", "client__client_id", "client__name")


@admin.register(TotpDevice)
class TotpDeviceAdmin(ViewOnlyAdmin):
    """Authenticator apps, without their secrets; removed by a project admin's reset or the user."""

    fields = list_display = ("user", "confirmed_at", "created")
    readonly_fields = fields
    search_fields = ("user__email",)


@admin.register(WebAuthnCredential)
class WebAuthnCredentialAdmin(ViewOnlyAdmin):
    fields = list_display = ("user", "name", "sign_count", "created", "last_used_at")
    readonly_fields = fields
    search_fields = ("user__email", "name")



@admin.register(SecurityEvent)
class SecurityEventAdmin(ViewOnlyAdmin):
    """The audit trail, read-only (``medplum_prune_audit`` alone deletes, after the retention period).

    Unlike the Project Admin's Audit log it shows the operator's reason of a failed sign-in
    (unknown email, wrong password, inactive user).
    """

    fields = ("id", "recorded", "event_type", "outcome", "reason", "operator_reason", "project", "actor_display",
              "actor_user", "actor_membership", "actor_profile", "actor_client", "subject", "subject_display",
              "remote_addr", "user_agent", "request_id", "detail")
    readonly_fields = fields
    list_display = ("recorded", "event_type", "outcome", "reason", "project", "actor_display", "subject",
                    "remote_addr", "request_id")
    list_filter = ("event_type", "outcome", "project")
    list_select_related = ("project",)
    search_fields = ("=request_id", "=subject", "=actor_user", "=actor_client", "actor_display")
    date_hierarchy = "recorded"
    show_full_result_count = False  # a COUNT(*) over the whole trail on every page is slow at scale


@admin.register(RegistrationToken)
class RegistrationTokenAdmin(ViewOnlyAdmin):
    """Initial access tokens of dynamic client registration, without their digests. Created with
    ``manage.py medplum_create_registration_token`` (the token is shown once, there)."""

    fields = ("id", "project", "label", "access_policy", "created", "expires_at", "revoked_at")
    readonly_fields = fields
    list_display = ("id", "project", "label", "created", "expires_at", "revoked_at")
    list_filter = ("project",)
    list_select_related = ("project",)
    actions = ["revoke_selected"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.{get_permission_codename('change', self.opts)}")

    @admin.action(description=_("Revoke selected registration tokens"), permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[RegistrationToken]) -> None:
        for row in queryset.filter(revoked_at__isnull=True):
            services.revoke_registration_token(row)
        self.message_user(request, _("Registration tokens revoked."), messages.SUCCESS)
