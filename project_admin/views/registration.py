"""Dynamic client registration: the project's initial access tokens (RFC 7591 §3).

A token is shown once, on the GET after the creating POST (as client secrets are); only its
digest is stored. Revoking one stops further registrations; registered clients stay.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.debug import sensitive_variables

from medplum_auth import onetime, services
from medplum_auth.conf import auth_settings
from medplum_auth.forms import add_service_error
from medplum_auth.models import AccessPolicy, RegistrationToken

from .base import HttpResponseSeeOther
from .clients import ClientView

TOKEN_KIND = "registration-token"


class RegistrationTokenForm(forms.Form):
    label = forms.CharField(label=gettext_lazy("Label"), max_length=200, required=False,
                            help_text=gettext_lazy("Who or what the token is for."))
    access_policy = forms.ModelChoiceField(
        label=gettext_lazy("Access policy of registered clients"), queryset=AccessPolicy.objects.none(),
        required=False)
    days = forms.IntegerField(label=gettext_lazy("Expires after (days)"), min_value=1, max_value=3650,
                              required=False, help_text=gettext_lazy("Empty: until revoked."))

    def __init__(self, *args: object, project: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.label_suffix = ""
        self.fields["access_policy"].queryset = AccessPolicy.objects.filter(project=project).order_by("name")


class RegistrationView(ClientView):
    template = "project_admin/clients/registration.html"

    def page(self, form: RegistrationTokenForm, status: int = 200, **context: object) -> HttpResponse:
        tokens = RegistrationToken.objects.filter(project=self.project).select_related("access_policy")
        return self.render(self.template, status=status, form=form, tokens=tokens.order_by("-created"),
                           endpoint=f"{auth_settings.ISSUER}/oauth2/register", **context)

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.page(RegistrationTokenForm(project=self.project))

    @method_decorator(sensitive_variables("token"))
    def post(self, request: HttpRequest) -> HttpResponse:
        form = RegistrationTokenForm(request.POST, project=self.project)
        if form.is_valid():
            try:
                row, token = services.create_registration_token(
                    self.project, label=form.cleaned_data["label"], access_policy=form.cleaned_data["access_policy"],
                    lifetime_days=form.cleaned_data["days"])
            except ValidationError as exc:
                add_service_error(form, exc)
            else:
                once = onetime.stash(request, TOKEN_KIND, row.pk, {"token": token})
                return HttpResponseSeeOther(self.url("registration-token", row.pk, once))
        return self.page(form, status=400)


class RegistrationTokenView(RegistrationView):
    """The only page that shows an initial access token: once."""

    def get(self, request: HttpRequest, pk: int, once: str) -> HttpResponse:  # type: ignore[override]
        row = self.get_object_or_404(RegistrationToken.objects.all(), pk=pk)
        values = onetime.take(request, once, TOKEN_KIND, row.pk)
        return self.page(RegistrationTokenForm(project=self.project), new=row,
                         token=(values or {}).get("token"))


class RegistrationRevokeView(ClientView):
    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        row = self.get_object_or_404(RegistrationToken.objects.all(), pk=pk)
        services.revoke_registration_token(row)
        return self.done(_("Registration token revoked: it registers no more clients."), "registration")
