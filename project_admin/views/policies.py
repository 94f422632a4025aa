"""Access policies: list, create/edit (rules as JSON and as a table), usage, and the preview."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _

from medplum_auth.forms import add_service_error
from medplum_auth.models import AccessPolicy, ClientApplication, ProjectMembership
from medplum_auth.policies import INTERACTIONS

from .. import preview
from ..forms import PolicyForm, PreviewForm
from .base import ProjectAdminView


def rule_rows(rules: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """One row per rule for the table beside the JSON: each interaction as a yes/no column."""
    rows = []
    for index, rule in enumerate(rules or [], start=1):
        allowed = set(rule.get("interaction", INTERACTIONS))
        rows.append({
            "index": index,
            "resource_type": rule.get("resourceType", ""),
            "criteria": rule.get("criteria", ""),
            "interactions": [(name, name in allowed) for name in INTERACTIONS],
            "hidden_fields": ", ".join(rule.get("hiddenFields", [])),
            "readonly_fields": ", ".join(rule.get("readonlyFields", [])),
        })
    return rows


class PolicyView(ProjectAdminView):
    section = "policies"

    def policies(self) -> QuerySet[AccessPolicy]:
        return AccessPolicy.objects.filter(project=self.project)


class PolicyListView(PolicyView):
    def get(self, request: HttpRequest) -> HttpResponse:
        policies = self.policies().annotate(client_count=Count("clients", distinct=True),
                                            member_count=Count("memberships", distinct=True)).order_by("name")
        return self.render("project_admin/policies/list.html", policies=policies)


class PolicyFormView(PolicyView):
    template = "project_admin/policies/form.html"

    def page(self, form: PolicyForm, policy: AccessPolicy | None, status: int = 200) -> HttpResponse:
        # The table shows the rules as saved (after an error, the submitted text may not parse).
        context: dict[str, Any] = {"form": form, "policy": policy, "interactions": INTERACTIONS,
                                   "rows": rule_rows(policy.resources if policy else None)}
        if policy is not None:
            context["clients"] = ClientApplication.objects.filter(access_policy=policy).order_by("name")
            context["members"] = (ProjectMembership.objects.filter(access_policy=policy)
                                  .select_related("user").order_by("profile_display"))
        return self.render(self.template, status=status, **context)

    def save(self, form: PolicyForm, policy: AccessPolicy | None) -> HttpResponse:
        if form.is_valid():
            try:
                saved = form.save()
            except ValidationError as exc:
                add_service_error(form, exc)
            else:
                verb = _("created") if policy is None else _("saved")
                return self.done(_("Access policy “%(name)s” %(verb)s.") % {"name": saved.name, "verb": verb},
                                 "policy", saved.pk)
        if policy is not None:
            policy.refresh_from_db()
        return self.page(form, policy, status=400)


class PolicyCreateView(PolicyFormView):
    def get(self, request: HttpRequest) -> HttpResponse:
        example = [{"resourceType": "Patient", "criteria": "Patient?_id=%patient.id", "interaction": ["read"]},
                   {"resourceType": "Observation", "criteria": "Observation?subject=%patient",
                    "interaction": ["read", "search"]}]
        return self.page(PolicyForm(project=self.project, initial={"resources": example}), None)

    def post(self, request: HttpRequest) -> HttpResponse:
        return self.save(PolicyForm(request.POST, project=self.project), None)


class PolicyEditView(PolicyFormView):
    def get(self, request: HttpRequest, pk: str) -> HttpResponse:
        policy = self.get_object_or_404(self.policies(), pk=pk)
        return self.page(PolicyForm(instance=policy, project=self.project), policy)

    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        policy = self.get_object_or_404(self.policies(), pk=pk)
        return self.save(PolicyForm(request.POST, instance=policy, project=self.project), policy)


class PreviewView(ProjectAdminView):
    """Pick a member, a client or a policy, and scopes → the effective policy and request answers.

    A GET form: nothing is written, and a preview can be bookmarked or shared.
    """

    section = "policies"

    def get(self, request: HttpRequest) -> HttpResponse:
        if set(request.GET) == {"through"}:  # "Preview a member through this client" on a client's page
            form = PreviewForm(project=self.project, initial={"through": request.GET["through"]})
        else:
            form = PreviewForm(request.GET or None, project=self.project)
        result = None
        if form.is_bound and form.is_valid():
            try:
                subject, through = form.subject_object(), form.through_object()
            except ObjectDoesNotExist:
                form.add_error("subject", _("This member, client or policy no longer exists."))
            else:
                data = form.cleaned_data
                result = preview.build(subject, scopes=data["scopes"], patient=data["patient"],
                                       profile=data["profile"], requests=form.request_lines(), through=through)
        return self.render("project_admin/policies/preview.html", form=form, preview=result,
                           status=400 if form.is_bound and form.errors else 200)
