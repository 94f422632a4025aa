"""The base view: sign-in, the admin check, the project, security headers, and rendering."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_protect

from medplum_auth.models import Project

from ..security import admin_page, administered_projects


class HttpResponseSeeOther(HttpResponseRedirect):
    """303 after a POST: the browser follows with a GET, so a reload never repeats the action."""

    status_code = 303


def error_text(exc: ValidationError) -> str:
    return " ".join(exc.messages)


@method_decorator([admin_page, csrf_protect], name="dispatch")
class ProjectAdminView(View):
    """A page for the admins of one project (``project_id`` in the URL) or of any of theirs.

    Anonymous users are sent to the sign-in page; signed-in users who administer no project
    get 403; a project they do not administer, or an object of another project, is 404.
    """

    section = ""
    project: Project

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("project_admin:login"))
        self.projects = list(administered_projects(request.user).order_by("name"))
        if not self.projects:
            return TemplateResponse(request, "project_admin/forbidden.html", {}, status=403)
        project_id = kwargs.pop("project_id", None)
        if project_id is not None:
            found = next((p for p in self.projects if p.pk == project_id), None)
            if found is None:
                raise Http404("No such project.")
            self.project = found
        return super().dispatch(request, *args, **kwargs)

    def get_object_or_404(self, queryset: Any, **lookup: Any) -> Any:
        """An object of this project; another project's is 404, like a missing one."""
        try:
            return queryset.get(project=self.project, **lookup)
        except (queryset.model.DoesNotExist, ValidationError, ValueError):
            raise Http404(f"No such {queryset.model._meta.verbose_name}.") from None

    def render(self, template: str, status: int = 200, **context: Any) -> TemplateResponse:
        context.setdefault("project", getattr(self, "project", None))
        return TemplateResponse(self.request, template, {
            "projects": self.projects, "section": self.section, **context}, status=status)

    def url(self, name: str, *args: Any) -> str:
        return reverse(f"project_admin:{name}", args=[self.project.pk, *args])

    def done(self, message: str, name: str, *args: Any, level: int = messages.SUCCESS) -> HttpResponse:
        """Confirm an action with a message and redirect (303) to a page of this project."""
        messages.add_message(self.request, level, message)
        return HttpResponseSeeOther(self.url(name, *args))


class IndexView(ProjectAdminView):
    """The only project's clients, or the list of the user's projects."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if len(self.projects) == 1:
            return HttpResponseRedirect(reverse("project_admin:clients", args=[self.projects[0].pk]))
        return self.render("project_admin/projects.html")


class ProjectHomeView(ProjectAdminView):
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponseRedirect(self.url("clients"))


SECTIONS = ("clients", "policies", "members", "sessions", "audit")


class SwitchProjectView(ProjectAdminView):
    """The project switcher: the same section of another project."""

    def get(self, request: HttpRequest) -> HttpResponse:
        section = request.GET.get("section", "clients")
        if section not in SECTIONS:
            section = "clients"
        try:
            wanted = uuid.UUID(request.GET.get("project", ""))
        except ValueError:
            raise Http404("No such project.") from None
        if not any(p.pk == wanted for p in self.projects):
            raise Http404("No such project.")
        return HttpResponseRedirect(reverse(f"project_admin:{section}", args=[wanted]))
