"""Medplum's paths: include with ``path("", include("medplum_auth.urls"))`` at the site root."""

from django.urls import path

from .views import account, auth_api, discovery, mfa, oauth, password, session, signin, userinfo

app_name = "medplum_auth"

urlpatterns = [
    path("oauth2/authorize", oauth.AuthorizeView.as_view(), name="authorize"),
    path("oauth2/authorize/resume", oauth.ResumeView.as_view(), name="authorize-resume"),
    path("oauth2/signin", signin.SignInView.as_view(), name="signin"),
    path("oauth2/profile", signin.ProfileView.as_view(), name="profile"),
    path("oauth2/mfa", account.MfaView.as_view(), name="mfa"),
    path("oauth2/mfa/webauthn", account.MfaWebAuthnView.as_view(), name="mfa-webauthn"),
    path("oauth2/account/security", account.SecurityView.as_view(), name="account-security"),
    path("oauth2/account/signin", account.AccountSignInView.as_view(), name="account-signin"),
    path("oauth2/account/webauthn", account.AccountWebAuthnView.as_view(), name="account-webauthn"),
    path("oauth2/consent", signin.ConsentView.as_view(), name="consent"),
    path("oauth2/patient", signin.PatientView.as_view(), name="patient"),
    path("oauth2/resetpassword", password.ForgotPasswordView.as_view(), name="reset-password"),
    path("oauth2/setpassword/done", password.SetPasswordDoneView.as_view(), name="set-password-done"),
    path("oauth2/setpassword/<uidb64>/<token>", password.SetPasswordView.as_view(), name="set-password"),
    path("oauth2/account", account.AccountView.as_view(), name="account"),
    path("oauth2/par", oauth.PushedAuthorizationView.as_view(), name="par"),
    path("oauth2/register", oauth.RegisterView.as_view(), name="register"),
    path("oauth2/register/<str:client_id>", oauth.ClientConfigurationView.as_view(), name="register-client"),
    path("oauth2/token", oauth.TokenView.as_view(), name="token"),
    path("oauth2/userinfo", userinfo.UserInfoView.as_view(), name="userinfo"),
    path("oauth2/logout", session.LogoutView.as_view(), name="logout"),
    path("oauth2/introspect", session.IntrospectView.as_view(), name="introspect"),
    path("oauth2/revoke", session.RevokeView.as_view(), name="revoke"),
    path("auth/login", auth_api.LoginView.as_view(), name="auth-login"),
    path("auth/profile", auth_api.ProfileView.as_view(), name="auth-profile"),
    path("auth/me", auth_api.MeView.as_view(), name="auth-me"),
    path("auth/resetpassword", auth_api.ResetPasswordView.as_view(), name="auth-resetpassword"),
    path("auth/setpassword", auth_api.SetPasswordView.as_view(), name="auth-setpassword"),
    path("auth/changepassword", auth_api.ChangePasswordView.as_view(), name="auth-changepassword"),
    path("auth/launch", auth_api.LaunchView.as_view(), name="auth-launch"),
    path("auth/mfa/status", mfa.StatusView.as_view(), name="auth-mfa-status"),
    path("auth/mfa/enroll", mfa.EnrollView.as_view(), name="auth-mfa-enroll"),
    path("auth/mfa/verify", mfa.VerifyView.as_view(), name="auth-mfa-verify"),
    path("auth/mfa/login-enroll", mfa.LoginEnrollView.as_view(), name="auth-mfa-login-enroll"),
    path("auth/mfa/disable", mfa.DisableView.as_view(), name="auth-mfa-disable"),
    path(".well-known/openid-configuration", discovery.openid_configuration, name="openid-configuration"),
    path(".well-known/oauth-authorization-server", discovery.openid_configuration,
         name="oauth-authorization-server"),
    path(".well-known/jwks.json", discovery.jwks, name="jwks"),
]
