"""``Authorization: Bearer`` (RFC 6750) and ``DPoP`` (RFC 9449) authentication with this provider's access tokens."""

from __future__ import annotations

from typing import Any

from django.utils.functional import SimpleLazyObject
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from medplum_auth import bearer
from medplum_auth.conf import auth_settings

from .exceptions import InvalidBearerToken


class ClientPrincipal:
    """``request.user`` for a client acting for itself (``client_credentials``).

    Authenticated but not a Django user: it has no password, groups or permissions, and
    ``pk`` is the client id so that per-principal throttles and logs can tell clients apart.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, client: Any):
        self.client = client
        self.pk = self.id = f"ClientApplication/{client.client_id}"
        self.username = client.client_id

    def __str__(self) -> str:
        return self.username

    def get_username(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return False

    def has_perms(self, perms: Any, obj: Any = None) -> bool:
        return False

    def has_module_perms(self, app_label: str) -> bool:
        return False


class BearerAuthentication(BaseAuthentication):
    """Verify a Bearer access token: signature, ``typ: at+jwt``, expiry and the login's revocation;
    a DPoP-bound one (RFC 9449) as ``Authorization: DPoP`` with its proof.

    Returns ``None`` when the request carries no Bearer token (another scheme may apply);
    ``request.user`` is the Django user, loaded on first use (or a :class:`ClientPrincipal`), ``request.auth`` the
    :class:`~medplum_auth.bearer.AccessContext`. ID tokens and refresh tokens never pass.
    """

    def authenticate(self, request: Request) -> tuple[Any, bearer.AccessContext] | None:
        django_request = getattr(request, "_request", request)
        found = bearer.credentials(django_request)
        if found is None:
            return None
        scheme, token = found
        try:
            context = bearer.authenticate(token, scheme=scheme, request=django_request)
        except bearer.BearerError as exc:
            raise InvalidBearerToken(exc.error, exc.description, exc.scheme, exc.nonce) from exc
        login = context.login
        # The Django user is loaded only if the API reads request.user (as Django's own
        # AuthenticationMiddleware does): the FHIR API never does, so it costs no query there.
        user = SimpleLazyObject(lambda: login.user_model) if login.user_id else ClientPrincipal(login.client)
        return user, context

    def authenticate_header(self, request: Request) -> str:
        return f'Bearer realm="{auth_settings.ISSUER}"'
