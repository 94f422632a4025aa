"""Project Admin URLs: include with ``path("project-admin/", include("project_admin.urls"))``."""

from django.urls import path

from .views import audit, auth, base, clients, members, policies, registration, sessions

app_name = "project_admin"

P = "p/<uuid:project_id>/"

urlpatterns = [
    path("", base.IndexView.as_view(), name="index"),
    path("login/", auth.LoginView.as_view(), name="login"),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
    path("set-password/done/", auth.SetPasswordDoneView.as_view(), name="set-password-done"),
    path("set-password/<uidb64>/<token>/", auth.SetPasswordView.as_view(), name="set-password"),
    path("switch/", base.SwitchProjectView.as_view(), name="switch"),
    path(P, base.ProjectHomeView.as_view(), name="project"),
    # Clients
    path(P + "clients/", clients.ClientListView.as_view(), name="clients"),
    path(P + "clients/new/", clients.ClientCreateView.as_view(), name="client-create"),
    path(P + "clients/registration/", registration.RegistrationView.as_view(), name="registration"),
    path(P + "clients/registration/<int:pk>/token/<str:once>/", registration.RegistrationTokenView.as_view(),
         name="registration-token"),
    path(P + "clients/registration/<int:pk>/revoke/", registration.RegistrationRevokeView.as_view(),
         name="registration-revoke"),
    path(P + "clients/<int:pk>/", clients.ClientDetailView.as_view(), name="client"),
    path(P + "clients/<int:pk>/secret/<str:token>/", clients.ClientSecretView.as_view(), name="client-secret"),
    path(P + "clients/<int:pk>/rotate/", clients.ClientRotateView.as_view(), name="client-rotate"),
    path(P + "clients/<int:pk>/retire/", clients.ClientRetireView.as_view(), name="client-retire"),
    path(P + "clients/<int:pk>/status/", clients.ClientStatusView.as_view(), name="client-status"),
    path(P + "clients/<int:pk>/delete/", clients.ClientDeleteView.as_view(), name="client-delete"),
    path(P + "clients/<int:pk>/launch/", clients.ClientLaunchView.as_view(), name="client-launch"),
    # Access policies
    path(P + "policies/", policies.PolicyListView.as_view(), name="policies"),
    path(P + "policies/new/", policies.PolicyCreateView.as_view(), name="policy-create"),
    path(P + "policies/preview/", policies.PreviewView.as_view(), name="preview"),
    path(P + "policies/<uuid:pk>/", policies.PolicyEditView.as_view(), name="policy"),
    # Members
    path(P + "members/", members.MemberListView.as_view(), name="members"),
    path(P + "members/invite/", members.MemberInviteView.as_view(), name="member-invite"),
    path(P + "members/<uuid:pk>/", members.MemberDetailView.as_view(), name="member"),
    path(P + "members/<uuid:pk>/link/", members.MemberNewLinkView.as_view(), name="member-new-link"),
    path(P + "members/<uuid:pk>/link/<str:token>/", members.MemberLinkView.as_view(), name="member-link"),
    path(P + "members/<uuid:pk>/remove/", members.MemberRemoveView.as_view(), name="member-remove"),
    path(P + "members/<uuid:pk>/mfa-reset/", members.MemberMfaResetView.as_view(), name="member-mfa-reset"),
    path(P + "members/mfa/", members.ProjectMfaView.as_view(), name="project-mfa"),
    # Sessions
    path(P + "sessions/", sessions.SessionListView.as_view(), name="sessions"),
    path(P + "sessions/<uuid:pk>/revoke/", sessions.SessionRevokeView.as_view(), name="session-revoke"),
    path(P + "sessions/user/<str:user_id>/revoke/", sessions.SessionRevokeUserView.as_view(),
         name="session-revoke-user"),
    # Audit log
    path(P + "audit/", audit.AuditLogView.as_view(), name="audit"),
]
