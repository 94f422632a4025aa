"""Clients: list, Create New Client (secret shown once), edit, rotate/retire secret, disable, delete."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from medplum_auth import launch as launch_utils
from medplum_auth import onetime, services
from medplum_auth.access import client_policy_rule
from medplum_auth.conf import auth_settings
from medplum_auth.forms import add_service_error
from medplum_auth.models import ClientApplication, ProjectMembership

from ..forms import ClientCreateForm, ClientEditForm
from .base import HttpResponseSeeOther, ProjectAdminView, error_text

SECRET_KIND = "client-secret"


def authorize_example(client: ClientApplication) -> dict[str, str] | None:
    """A ready authorization request for the client's first redirect URI, with a fresh PKCE pair.

    The verifier is shown beside it, so the code the browser lands with can be redeemed.
    """
    uris = client.redirect_uri_list
    if not uris:
        return None
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({
        "response_type": "code", "client_id": client.client_id, "redirect_uri": uris[0],
        "scope": "openid profile", "state": secrets.token_urlsafe(12),
        "code_challenge": challenge, "code_challenge_method": "S256",
    })
    issuer = auth_settings.ISSUER.rstrip("/")
    return {"url": f"{issuer}/oauth2/authorize?{query}", "verifier": verifier, "redirect_uri": uris[0],
            "token_endpoint": f"{issuer}/oauth2/token"}


class ClientView(ProjectAdminView):
    section = "clients"

    def clients(self) -> QuerySet[ClientApplication]:
        return ClientApplication.objects.filter(project=self.project).select_related("access_policy", "project")

    def client(self, pk: int) -> ClientApplication:
        return self.get_object_or_404(self.clients(), pk=pk)

    @sensitive_variables("secret")
    def show_secret(self, client: ClientApplication, secret: str | None, *, rotated: bool) -> HttpResponse:
        """Post/Redirect/Get to the one page that shows ``secret``."""
        token = onetime.stash(self.request, SECRET_KIND, client.pk, {"secret": secret, "rotated": rotated})
        return HttpResponseSeeOther(self.url("client-secret", client.pk, token))


class ClientListView(ClientView):
    def get(self, request: HttpRequest) -> HttpResponse:
        return self.render("project_admin/clients/list.html", clients=self.clients().order_by("name"))


def _split_fields(form: Any, advanced: tuple[str, ...]) -> dict[str, Any]:
    main = [form[name] for name in form.fields if name not in advanced]
    extra = [form[name] for name in form.fields if name in advanced]
    return {"form": form, "main_fields": main, "advanced_fields": extra,
            "advanced_open": any(field.errors for field in extra)}


class ClientCreateView(ClientView):
    template = "project_admin/clients/create.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        form = ClientCreateForm(project=self.project)
        return self.render(self.template, **_split_fields(form, ClientCreateForm.ADVANCED_FIELDS))

    @method_decorator(sensitive_variables("secret"))
    def post(self, request: HttpRequest) -> HttpResponse:
        form = ClientCreateForm(request.POST, project=self.project)
        if form.is_valid():
            try:
                client = form.save()
            except ValidationError as exc:
                add_service_error(form, exc)
            else:
                messages.success(request, _("Client “%(name)s” created.") % {"name": client.name})
                return self.show_secret(client, form.secret, rotated=False)
        return self.render(self.template, status=400, **_split_fields(form, ClientCreateForm.ADVANCED_FIELDS))


class ClientSecretView(ClientView):
    """The only page that ever shows a client secret: once, right after creation or rotation."""

    def get(self, request: HttpRequest, pk: int, token: str) -> HttpResponse:
        client = self.client(pk)
        values = onetime.take(request, token, SECRET_KIND, client.pk)
        return self.render("project_admin/clients/secret.html", client=client, shown=values is not None,
                           secret=(values or {}).get("secret"), rotated=bool((values or {}).get("rotated")),
                           authorize=authorize_example(client))


class ClientDetailView(ClientView):
    template = "project_admin/clients/detail.html"

    def page(self, client: ClientApplication, form: ClientEditForm, status: int = 200) -> HttpResponse:
        response = self.render(self.template, status=status, client=client, authorize=authorize_example(client),
                               launch_patients=self.launch_patients(client), client_policy_rule=client_policy_rule(),
                               **_split_fields(form, ClientEditForm.ADVANCED_FIELDS))
        if client.launch_uri:  # "Launch app" posts here and is redirected to the app
            parts = urlsplit(client.launch_uri)
            response.form_action_origins = [f"{parts.scheme}://{parts.netloc}"]
        return response

    def launch_patients(self, client: ClientApplication) -> list[dict[str, str]]:
        """Suggestions for the "Launch app" patient field, from the patient search if one is set up."""
        search = launch_utils.patient_search()
        if not client.launch_uri or search is None:
            return []
        membership = ProjectMembership.objects.filter(user=self.request.user, project=self.project,
                                                      active=True).first()
        return search(membership, client=client) if membership is not None else []

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        client = self.client(pk)
        return self.page(client, ClientEditForm(instance=client))

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        client = self.client(pk)
        form = ClientEditForm(request.POST, instance=client)
        if form.is_valid():
            try:
                form.save()
            except ValidationError as exc:
                add_service_error(form, exc)
            else:
                return self.done(_("Client “%(name)s” saved.") % {"name": client.name}, "client", client.pk)
        # The form changed the instance in place; show the saved client beside the submitted input.
        client.refresh_from_db()
        return self.page(client, form, status=400)


class ClientLaunchView(ClientView):
    """SMART EHR launch: make a launch context for the chosen patient and open the app with it."""

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        client = self.client(pk)
        try:
            launch = services.create_launch(client, request.POST.get("patient", ""),
                                            encounter=request.POST.get("encounter", "").strip() or None,
                                            project=self.project, created_by=request.user)
        except ValidationError as exc:
            return self.done(error_text(exc), "client", client.pk, level=messages.ERROR)
        return HttpResponseSeeOther(launch_utils.launch_url(launch))


class ClientRotateView(ClientView):
    """New secret, shown once; the current one keeps working as the retiring secret."""

    @method_decorator(sensitive_variables("secret"))
    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        client = self.client(pk)
        try:
            secret = services.rotate_client_secret(client)
        except ValidationError as exc:
            return self.done(error_text(exc), "client", client.pk, level=messages.ERROR)
        messages.success(request, _("New secret issued. The previous secret keeps working until you retire it."))
        return self.show_secret(client, secret, rotated=True)


class ConfirmView(ClientView):
    """GET asks, POST acts. Subclasses name the question and the action."""

    title = ""
    question = ""
    button = ""
    danger = False

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        client = self.client(pk)
        return self.render("project_admin/confirm.html", object=client, title=self.title % {"name": client.name},
                           question=self.question, button=self.button, danger=self.danger,
                           cancel_url=self.url("client", client.pk))


class ClientRetireView(ConfirmView):
    title = "Retire the old secret of “%(name)s”?"
    question = ("The previous secret stops working at once. Do this after every instance of the app "
                "uses the new secret.")
    button = "Retire old secret"
    danger = True

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        client = self.client(pk)
        if not client.retiring_secret:
            return self.done(_("This client has no old secret to retire."), "client", client.pk, level=messages.INFO)
        services.retire_client_secret(client)
        return self.done(_("Old secret retired: only the current secret works now."), "client", client.pk)


class ClientStatusView(ClientView):
    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        client = self.client(pk)
        status = request.POST.get("status", "")
        try:
            services.set_client_status(client, status)
        except ValidationError as exc:
            return self.done(error_text(exc), "client", client.pk, level=messages.ERROR)
        if status == ClientApplication.Status.OFF:
            message = _("Client disabled: it gets invalid_client at once and its sessions were revoked.")
        else:
            message = _("Client enabled.")
        return self.done(message, "client", client.pk)


class ClientDeleteView(ConfirmView):
    title = "Delete “%(name)s”?"
    question = ("The client, its sessions and its tokens are deleted; apps using its client ID stop working. "
                "This cannot be undone.")
    button = "Delete client"
    danger = True

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        client = self.client(pk)
        name = client.name
        services.delete_client(client)
        return self.done(_("Client “%(name)s” deleted; its tokens were revoked.") % {"name": name}, "clients")
