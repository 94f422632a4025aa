"""CSRF protection of every browser form, enumerated from the URLconf.

Every URL of ``medplum_auth``, ``project_admin`` and ``fhir_api`` (and the example site's own
sign-in page) either refuses a POST without the CSRF token with Django's 403 — before the view
runs, so nothing in the database changes — or is listed in :data:`EXEMPT` with the reason it
needs none (it never acts on the session cookie). A new form without CSRF protection, or a
view made CSRF-exempt, fails here without anyone having to remember to add a test.

For the actions, the same POST *with* the token is shown to change the database, so "nothing
changed" is about the missing token, not about a body that would have done nothing anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from medplum_auth.models import ClientApplication, Consent, Login, RecoveryCode
from tests.factories import (
    AccessPolicyFactory,
    ClientApplicationFactory,
    MembershipFactory,
    ProjectFactory,
    UserFactory,
)

NAMESPACES = {"medplum_auth", "project_admin", "fhir_api", None}  # None: the example site's own URLs

BEARER_API = "JSON/FHIR API: authenticated by a Bearer token, client credentials or a login id, never the session"
PUBLIC_DOCUMENT = "public GET-only document: any other method is 405 (not the CSRF page), no session is read"
EXEMPT = {
    "medplum_auth:authorize": "OIDC Core §3.1.2.1 POST authorization requests come from other sites; "
                              "the decision is taken on /oauth2/consent, which is protected",
    "medplum_auth:token": "RFC 6749 §3.2: client authentication, no cookies",
    "medplum_auth:userinfo": BEARER_API,
    "medplum_auth:introspect": "RFC 7662: client authentication, no cookies",
    "medplum_auth:par": "RFC 9126 §2: client authentication, no cookies",
    "medplum_auth:register": "RFC 7591 §3: an initial access token (Bearer) or open registration, no cookies",
    "medplum_auth:register-client": "RFC 7592 §2: the registration access token (Bearer), no cookies",
    "medplum_auth:revoke": "RFC 7009: client authentication, no cookies",
    "medplum_auth:auth-login": BEARER_API,
    "medplum_auth:auth-profile": BEARER_API,
    "medplum_auth:auth-resetpassword": BEARER_API,
    "medplum_auth:auth-setpassword": BEARER_API,
    "medplum_auth:auth-changepassword": BEARER_API,
    "medplum_auth:auth-launch": BEARER_API,
    "medplum_auth:auth-mfa-enroll": BEARER_API,
    "medplum_auth:auth-mfa-verify": BEARER_API,
    "medplum_auth:auth-mfa-login-enroll": BEARER_API,
    "medplum_auth:auth-mfa-disable": BEARER_API,
    "fhir_api:metadata": BEARER_API,
    "fhir_api:audit-events": BEARER_API,
    "fhir_api:audit-event": BEARER_API,
    "fhir_api:bundle": BEARER_API,
    "fhir_api:binaries": BEARER_API,
    "fhir_api:binary": BEARER_API,
    "fhir_api:validate": BEARER_API,
    "fhir_api:validate-instance": BEARER_API,
    "fhir_api:everything": BEARER_API,
    "fhir_api:type": BEARER_API,
    "fhir_api:instance": BEARER_API,
    "fhir_api:history": BEARER_API,
    "fhir_api:vread": BEARER_API,
    "fhir_api:not-found": BEARER_API,
    "medplum_auth:openid-configuration": PUBLIC_DOCUMENT,
    "medplum_auth:oauth-authorization-server": PUBLIC_DOCUMENT,
    "medplum_auth:jwks": PUBLIC_DOCUMENT,
    "fhir_api:smart-configuration": PUBLIC_DOCUMENT,
    "fhir_api:fhir-smart-configuration": PUBLIC_DOCUMENT,
    "fhir_api:smart-styles": PUBLIC_DOCUMENT,
    "fhir_api:fhir-smart-styles": PUBLIC_DOCUMENT,
    "api-schema": "the public OpenAPI schema: GET only, reads nothing of the session",
    "api-schema-docs": "the public OpenAPI docs page: GET only, reads nothing of the session",
}

CSRF_TOKEN = "k" * 32  # a CSRF secret as Django's cookie holds it (CSRF_SECRET_LENGTH)


def routes() -> Iterator[tuple[str, URLPattern, list[str]]]:
    """``(namespace:name, pattern, route segments)`` of every URL in our namespaces."""
    def walk(resolver: URLResolver, prefix: list[str], namespace: str | None):
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                yield from walk(entry, [*prefix, str(entry.pattern)], entry.namespace or namespace)
            elif namespace in NAMESPACES and entry.name:
                yield f"{namespace}:{entry.name}" if namespace else entry.name, entry, [*prefix, str(entry.pattern)]
    yield from walk(get_resolver(), [], None)


ROUTES = {name: (pattern, segments) for name, pattern, segments in routes()}
PROTECTED = sorted(name for name in ROUTES if name not in EXEMPT)


@pytest.fixture
def world(db) -> dict[str, Any]:
    """A project with an admin (the signed-in user), a client with a retiring secret, a policy, a
    member with a session and a second factor, and an app the admin has consented to."""
    project = ProjectFactory(name="CSRF clinic")
    admin = MembershipFactory(project=project, user=UserFactory(email="csrf-admin@example.org"),
                              profile_type="Practitioner", admin=True)
    app = ClientApplicationFactory(project=project, retiring_secret="hmac-sha256$" + "0" * 64,
                                   launch_uri="https://app.example.org/launch")
    member = MembershipFactory(project=project, profile_type="Patient")
    now = timezone.now()
    session = Login.objects.create(user=member.user, client=app, project=project, membership=member, auth_time=now,
                                   granted_at=now, scope="openid offline_access",
                                   refresh_digest="1" * 64, refresh_expires_at=now + timedelta(days=1))
    own = Login.objects.create(user=admin.user, client=app, project=project, membership=admin, auth_time=now,
                               granted_at=now, scope="openid offline_access",
                               refresh_digest="2" * 64, refresh_expires_at=now + timedelta(days=1))
    RecoveryCode.objects.create(user=member.user, digest="3" * 64)
    consent = Consent.objects.create(user=admin.user, client=app, scope="openid")
    return {"project": project, "admin": admin, "app": app, "policy": AccessPolicyFactory(project=project),
            "member": member, "session": session, "own_session": own, "consent": consent}


def path_for(name: str, world: dict[str, Any]) -> str:
    """The route with every converter filled from ``world`` (by parameter name and section)."""
    pattern, segments = ROUTES[name]
    values = {"project_id": world["project"].pk, "user_id": world["member"].user.pk, "token": "t" * 44,
              "once": "o" * 44, "uidb64": "MQ", "pk": _pk(name, world)}
    path = "".join(segments)
    for key, value in values.items():
        for converter in ("", "int:", "uuid:", "str:"):
            path = path.replace(f"<{converter}{key}>", str(value))
    assert "<" not in path and "(?P" not in path, f"fill in the parameters of {name}: {path}"
    return "/" + path


def _pk(name: str, world: dict[str, Any]) -> Any:
    short = name.split(":")[-1]
    if short.startswith("client"):
        return world["app"].pk
    if short.startswith("policy"):
        return world["policy"].pk
    if short.startswith("member"):
        return world["member"].pk
    if short.startswith("session"):
        return world["session"].pk
    return 0


RULES = '[{"resourceType": "Patient", "interaction": ["read"]}]'

#: What each action posts; the control test shows that with the token it changes the database.
ACTIONS: dict[str, Any] = {
    "project_admin:logout": lambda w: {},
    "project_admin:client-rotate": lambda w: {},
    "project_admin:client-retire": lambda w: {},
    "project_admin:client-status": lambda w: {"status": ClientApplication.Status.OFF},
    "project_admin:client-delete": lambda w: {},
    "project_admin:client-launch": lambda w: {"patient": "Patient/p-1"},
    "project_admin:client-create": lambda w: {"name": "Forged client", "redirect_uris": "https://evil.example/cb",
                                              "client_type": "confidential"},
    "project_admin:policy-create": lambda w: {"name": "Forged policy", "resources": RULES},
    "project_admin:policy": lambda w: {"name": "Forged name", "resources": RULES},
    "project_admin:member-invite": lambda w: {"email": "forged@example.org", "first_name": "F", "last_name": "G",
                                              "profile_type": "Practitioner"},
    "project_admin:member-remove": lambda w: {},
    "project_admin:member-mfa-reset": lambda w: {},
    "project_admin:project-mfa": lambda w: {"mfa_required": "on"},
    "project_admin:session-revoke": lambda w: {},
    "project_admin:session-revoke-user": lambda w: {},
    "project_admin:registration": lambda w: {"label": "Forged registration", "days": "30"},
    "medplum_auth:account": lambda w: {"action": "revoke-app", "consent": w["consent"].pk},
    # The view is exempt for Bearer and id_token_hint logouts, but its own confirmation form is not.
    "medplum_auth:logout": lambda w: {"client_id": w["app"].client_id},
}


def database_state() -> list[Any]:
    """Every row of every table (the test database is small)."""
    return [(model._meta.label, list(model._base_manager.order_by("pk").values_list()))
            for model in apps.get_models()]


def browser(world: dict[str, Any]) -> Client:
    """The project's admin, signed in, with a CSRF cookie (as after any page view)."""
    http = Client(enforce_csrf_checks=True)
    http.force_login(world["admin"].user)
    http.cookies["csrftoken"] = CSRF_TOKEN
    return http


def test_every_route_is_checked_and_the_exempt_list_is_current():
    assert set(EXEMPT) <= set(ROUTES), f"no such URL any more: {set(EXEMPT) - set(ROUTES)}"
    assert set(ACTIONS) <= set(PROTECTED)
    assert {"project_admin:login", "project_admin:set-password", "medplum_auth:signin", "medplum_auth:consent",
            "medplum_auth:account-security", "medplum_auth:mfa", "medplum_auth:reset-password",
            "medplum_auth:set-password", "admin-login"} <= set(PROTECTED)


@pytest.mark.parametrize("name", sorted(EXEMPT))
def test_exempt_views_are_exempt_on_purpose(name):
    """Only the listed views skip the check; each says why (the list above)."""
    pattern, _ = ROUTES[name]
    assert getattr(pattern.callback, "csrf_exempt", False), f"{name} is protected: drop it from EXEMPT"


@pytest.mark.spec("OWASP CSRF prevention; Django CsrfViewMiddleware")
@pytest.mark.parametrize("name", PROTECTED)
def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(world, name):
    http = browser(world)
    body = ACTIONS.get(name, lambda w: {})(world)
    before = database_state()
    response = http.post(path_for(name, world), body)
    assert response.status_code == 403, (name, response.status_code)
    assert b"CSRF verification failed" in response.content
    assert database_state() == before


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_the_same_post_with_the_token_acts(world, name):
    """The control: the refused body above is a real action."""
    http = browser(world)
    before = database_state()
    response = http.post(path_for(name, world), {**ACTIONS[name](world), "csrfmiddlewaretoken": CSRF_TOKEN})
    assert response.status_code in (200, 302, 303), (name, response.status_code, response.content[:500])
    assert database_state() != before, name
