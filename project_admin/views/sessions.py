"""Sessions: the project's active logins; revoke one, or every one of a user's."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from medplum_auth import services
from medplum_auth.logins import usable_logins
from medplum_auth.models import Login

from .base import ProjectAdminView

REASON = "revoked_by_project_admin"


class SessionView(ProjectAdminView):
    section = "sessions"

    def active_logins(self) -> QuerySet[Login]:
        """The project's logins that can still back a token (``medplum_auth.logins.usable_logins``)."""
        return usable_logins(project=self.project)


class SessionListView(SessionView):
    def get(self, request: HttpRequest) -> HttpResponse:
        logins = self.active_logins().order_by("-auth_time")
        return self.render("project_admin/sessions/list.html", logins=logins)


class SessionRevokeView(SessionView):
    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        login = self.get_object_or_404(Login.objects.all(), pk=pk)
        if services.revoke_login(login, reason=REASON):
            return self.done(_("Session revoked: its tokens no longer work."), "sessions")
        return self.done(_("This session was already revoked."), "sessions")


class SessionRevokeUserView(SessionView):
    def post(self, request: HttpRequest, user_id: str) -> HttpResponse:
        try:
            user = get_user_model()._default_manager.filter(
                pk=user_id, medplum_memberships__project=self.project).distinct().first()
        except (ValueError, ValidationError):  # not a primary key of the user model
            user = None
        if user is None:
            raise Http404("No such member.")
        count = services.revoke_logins(user=user, project=self.project, reason=REASON)
        return self.done(ngettext("Revoked %(count)d session of %(user)s.", "Revoked %(count)d sessions of %(user)s.",
                                  count) % {"count": count, "user": user.email or user}, "sessions")
