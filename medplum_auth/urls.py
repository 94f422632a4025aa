"""Medplum's paths: include with ``path("", include("medplum_auth.urls"))`` at the site root."""

from django.urls import path

from .views import account, auth_api, discovery, oauth, session, signin, userinfo

app_name = "medplum_auth"

urlpatterns = [
    path("oauth2/authorize", oauth.AuthorizeView.as_view(), name="authorize"),
    path("oauth2/authorize/resume", oauth.ResumeView.as_view(), name="authorize-resume"),
    path("oauth2/signin", signin.SignInView.as_view(), name="signin"),
    path("oauth2/profile", signin.ProfileView.as_view(), name="profile"),
    path("oauth2/consent", signin.ConsentView.as_view(), name="consent"),
    path("oauth2/patient", signin.PatientView.as_view(), name="patient"),
    path("oauth2/account", account.AccountView.as_view(), name="account"),
    path("oauth2/token", oauth.TokenView.as_view(), name="token"),
    path("oauth2/userinfo", userinfo.UserInfoView.as_view(), name="userinfo"),
    path("oauth2/logout", session.LogoutView.as_view(), name="logout"),
    path("oauth2/introspect", session.IntrospectView.as_view(), name="introspect"),
    path("oauth2/revoke", session.RevokeView.as_view(), name="revoke"),
    path("auth/login", auth_api.LoginView.as_view(), name="auth-login"),
    path("auth/profile", auth_api.ProfileView.as_view(), name="auth-profile"),
    path("auth/me", auth_api.MeView.as_view(), name="auth-me"),
    path("auth/launch", auth_api.LaunchView.as_view(), name="auth-launch"),
    path(".well-known/openid-configuration", discovery.openid_configuration, name="openid-configuration"),
    path(".well-known/oauth-authorization-server", discovery.openid_configuration,
         name="oauth-authorization-server"),
    path(".well-known/jwks.json", discovery.jwks, name="jwks"),
]
