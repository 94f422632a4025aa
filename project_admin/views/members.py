"""Members: list, invite (with a one-time set-password link), edit, remove."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.db.models import Max, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables

from medplum_auth import mfa, onetime, services
from medplum_auth.forms import add_service_error
from medplum_auth.models import ProjectMembership

from ..forms import InviteForm, MemberForm
from .base import HttpResponseSeeOther, ProjectAdminView

LINK_KIND = "set-password-link"


@sensitive_variables("token")
def set_password_url(request: HttpRequest, user: Any) -> str:
    """An absolute link that sets ``user``'s password once (Django's password-reset token).

    The token is bound to the password hash, so it stops working once a password is set, and
    after ``PASSWORD_RESET_TIMEOUT``.
    """
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    return request.build_absolute_uri(reverse("project_admin:set-password", args=[uid, token]))


class MemberView(ProjectAdminView):
    section = "members"

    def members(self) -> QuerySet[ProjectMembership]:
        return ProjectMembership.objects.filter(project=self.project).select_related("user", "access_policy")

    def member(self, pk: str) -> ProjectMembership:
        return self.get_object_or_404(self.members(), pk=pk)

    def may_issue_link(self, membership: ProjectMembership) -> bool:
        """A link only for a user who never set a password and belongs to this project alone.

        An admin must not be able to take over an account that signs in elsewhere.
        """
        user = membership.user
        if user.has_usable_password():
            return False
        if self.request.user.is_superuser:
            return True
        return not user.medplum_memberships.exclude(project=self.project).exists()

    def may_reset_mfa(self, membership: ProjectMembership) -> bool:
        """Only for a user of this project alone (a superuser: anyone): an admin must not weaken
        the sign-in of an account that other projects rely on."""
        if self.request.user.is_superuser:
            return True
        return not membership.user.medplum_memberships.exclude(project=self.project).exists()

    def show_link(self, membership: ProjectMembership) -> HttpResponse:
        token = onetime.stash(self.request, LINK_KIND, membership.pk,
                              {"url": set_password_url(self.request, membership.user)})
        return HttpResponseSeeOther(self.url("member-link", membership.pk, token))


class MemberListView(MemberView):
    def get(self, request: HttpRequest) -> HttpResponse:
        members = self.members().annotate(last_sign_in=Max("logins__auth_time")).order_by(
            "profile_type", "profile_display")
        return self.render("project_admin/members/list.html", members=members)


class MemberInviteView(MemberView):
    template = "project_admin/members/invite.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.render(self.template, form=InviteForm(project=self.project))

    def post(self, request: HttpRequest) -> HttpResponse:
        form = InviteForm(request.POST, project=self.project)
        if form.is_valid():
            try:
                membership = form.save()
            except ValidationError as exc:
                add_service_error(form, exc)
            else:
                name = membership.profile_display
                if form.invitation is not None and form.invitation.created_user and self.may_issue_link(membership):
                    messages.success(request, _("%(name)s was invited as a %(type)s.") % {
                        "name": name, "type": membership.profile_type})
                    return self.show_link(membership)
                return self.done(_("%(name)s already had an account and was added as a %(type)s; they sign in "
                                   "with their existing password.") % {"name": name, "type": membership.profile_type},
                                 "members")
        return self.render(self.template, form=form, status=400)


class MemberLinkView(MemberView):
    """The one page that shows a set-password link."""

    def get(self, request: HttpRequest, pk: str, token: str) -> HttpResponse:
        membership = self.member(pk)
        values = onetime.take(request, token, LINK_KIND, membership.pk)
        return self.render("project_admin/members/link.html", member=membership,
                           link=(values or {}).get("url"), may_issue_link=self.may_issue_link(membership))


class MemberNewLinkView(MemberView):
    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        membership = self.member(pk)
        if not self.may_issue_link(membership):
            return self.done(_("A set-password link can only be made for a user who has not set a password "
                               "and belongs to this project only."), "member", membership.pk, level=messages.ERROR)
        messages.success(request, _("New set-password link made. Earlier links keep working until a password is set."))
        return self.show_link(membership)



class MemberMfaResetView(MemberView):
    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        membership = self.member(pk)
        if not self.may_reset_mfa(membership):
            return self.done(_("Two-step sign-in can only be reset for a user who belongs to this project only."),
                             "member", membership.pk, level=messages.ERROR)
        removed = services.reset_mfa(membership)
        return self.done(_("Two-step sign-in of %(name)s was reset (%(count)d removed).") % {
            "name": membership.profile_display or membership.profile, "count": removed}, "member", membership.pk)


class ProjectMfaView(MemberView):
    """Require (or stop requiring) a second factor of every member."""

    def post(self, request: HttpRequest) -> HttpResponse:
        required = request.POST.get("mfa_required") == "on"
        services.update_project(self.project, mfa_required=required)
        text = (_("Two-step sign-in is now required: members without one set it up at their next sign-in.")
                if required else _("Two-step sign-in is no longer required."))
        return self.done(text, "members")


class MemberDetailView(MemberView):
    template = "project_admin/members/detail.html"

    def page(self, membership: ProjectMembership, form: MemberForm, status: int = 200) -> HttpResponse:
        return self.render(self.template, status=status, member=membership, form=form,
                           may_issue_link=self.may_issue_link(membership),
                           may_reset_mfa=self.may_reset_mfa(membership), factors=sorted(mfa.factors(membership.user)))

    def get(self, request: HttpRequest, pk: str) -> HttpResponse:
        membership = self.member(pk)
        return self.page(membership, MemberForm(instance=membership))

    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        membership = self.member(pk)
        form = MemberForm(request.POST, instance=membership)
        if form.is_valid():
            if self.locks_out(membership, form.cleaned_data):
                form.add_error(None, _("You cannot remove your own admin access here; ask another admin."))
            else:
                try:
                    form.save()
                except ValidationError as exc:
                    add_service_error(form, exc)
                else:
                    return self.done(_("Member %(name)s saved.") % {"name": membership.profile_display},
                                     "member", membership.pk)
        membership.refresh_from_db()
        return self.page(membership, form, status=400)

    def locks_out(self, membership: ProjectMembership, data: dict[str, Any]) -> bool:
        if membership.user_id != self.request.user.pk or self.request.user.is_superuser:
            return False
        return not (data.get("admin") and data.get("active"))


class MemberRemoveView(MemberView):
    def get(self, request: HttpRequest, pk: str) -> HttpResponse:
        membership = self.member(pk)
        return self.render("project_admin/confirm.html", object=membership,
                           title=_("Remove %(name)s from %(project)s?") % {
                               "name": membership.profile_display or membership.profile, "project": self.project},
                           question=_("Their sessions in this project are revoked and the membership is deleted. "
                                      "The user account stays (it may belong to other projects)."),
                           button=_("Remove member"), danger=True, cancel_url=self.url("member", membership.pk))

    def post(self, request: HttpRequest, pk: str) -> HttpResponse:
        membership = self.member(pk)
        if membership.user_id == request.user.pk and not request.user.is_superuser:
            return self.done(_("You cannot remove yourself; ask another admin."), "member", membership.pk,
                             level=messages.ERROR)
        name = membership.profile_display or membership.profile
        services.remove_membership(membership)
        return self.done(_("%(name)s was removed from the project; their sessions were revoked.") % {"name": name},
                         "members")
