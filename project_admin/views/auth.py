"""Sign-in for the Project Admin pages (Django's LoginView) and the invitees' set-password pages."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.http import HttpResponse
from django.urls import reverse_lazy
from django.utils.decorators import method_decorator
from django.views.generic import TemplateView

from medplum_auth import mfa
from medplum_auth.authorization import AMR_KEY
from medplum_auth.signin import begin_second_factor

from ..forms import EmailAuthenticationForm, SetPasswordForm
from ..security import admin_page


@method_decorator(admin_page, name="dispatch")
class LoginView(auth_views.LoginView):
    """Email and password, with the OAuth sign-in page's throttling (``medplum_auth.signin``)."""

    template_name = "project_admin/login.html"
    authentication_form = EmailAuthenticationForm
    next_page = reverse_lazy("project_admin:index")

    def form_valid(self, form: EmailAuthenticationForm) -> HttpResponse:
        """A user with a second factor (or whose project requires one) passes it before signing in."""
        user = form.get_user()
        if mfa.required_for(user):
            return begin_second_factor(self.request, user, self.get_success_url(), label="Project Admin")
        response = super().form_valid(form)
        self.request.session[AMR_KEY] = "pwd"
        return response


@method_decorator(admin_page, name="dispatch")
class LogoutView(auth_views.LogoutView):
    next_page = reverse_lazy("project_admin:login")


@method_decorator(admin_page, name="dispatch")
class SetPasswordView(auth_views.PasswordResetConfirmView):
    """An invitee's one-time link (Django's password-reset token): choose a password.

    Django moves the token from the URL into the session before the form is shown, so it does
    not leak through the page's URL.
    """

    template_name = "project_admin/set_password.html"
    form_class = SetPasswordForm
    success_url = reverse_lazy("project_admin:set-password-done")
    post_reset_login = False


@method_decorator(admin_page, name="dispatch")
class SetPasswordDoneView(TemplateView):
    template_name = "project_admin/set_password_done.html"
