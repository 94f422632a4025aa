"""The reusable DRF classes in ``medplum_auth.contrib.rest_framework``, used by a host API."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import connection
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from medplum_auth.access import COMPARTMENT_PARAM
from medplum_auth.bearer import AccessContext
from medplum_auth.contrib.rest_framework.authentication import BearerAuthentication, ClientPrincipal
from medplum_auth.contrib.rest_framework.exceptions import (
    InvalidBearerToken,
    PreconditionFailed,
    exception_handler,
)
from medplum_auth.contrib.rest_framework.permissions import AccessPolicyPermission, SmartScopePermission
from medplum_auth.contrib.rest_framework.policy import effective_policy_for
from medplum_auth.models import Login
from tests.factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory
from tests.fhir.conftest import mint

pytestmark = pytest.mark.django_db
factory = APIRequestFactory()


def _context(token: str) -> AccessContext:
    from medplum_auth import bearer

    return bearer.authenticate(token)


class HostObservations(APIView):
    """What a host site writes: a DRF view over its own data, guarded by the provider's classes."""

    authentication_classes = [BearerAuthentication]
    permission_classes = [AccessPolicyPermission]
    resource_type = "Observation"

    def get_exception_handler(self):
        return exception_handler

    def get(self, request, pk=None):
        decision = request.policy_decision
        return Response({"outcome": decision.outcome, "filters": [list(map(list, f)) for f in decision.filters]})

    def post(self, request, pk=None):
        return Response({"created": True}, status=201)


class ScopeOnly(HostObservations):
    permission_classes = [SmartScopePermission]


def test_no_bearer_header_is_not_our_business(rf):
    auth = BearerAuthentication()
    assert auth.authenticate(factory.get("/x")) is None
    assert auth.authenticate(factory.get("/x", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz")) is None
    assert auth.authenticate_header(factory.get("/x")) == 'Bearer realm="http://127.0.0.1:8000"'


def test_user_and_client_principals(app1, alice):
    from django.test.utils import CaptureQueriesContext
    from rest_framework.request import Request

    token = mint(client=app1, membership=alice)
    BearerAuthentication().authenticate(Request(factory.get("/x", HTTP_AUTHORIZATION=f"Bearer {token}")))  # keys
    with CaptureQueriesContext(connection) as queries:
        user, context = BearerAuthentication().authenticate(
            Request(factory.get("/x", HTTP_AUTHORIZATION=f"Bearer {token}")))
    assert len(queries) == 1  # the login, with everything the API reads; the user model only on use
    assert context.login.membership.pk == alice.pk and context.login.membership.profile == alice.profile
    assert user == alice.user and user.get_username() == alice.user.get_username()  # the Django user, loaded now
    principal, context = BearerAuthentication().authenticate(
        Request(factory.get("/x", HTTP_AUTHORIZATION=f"Bearer {mint(client=app1)}")))
    assert isinstance(principal, ClientPrincipal)
    assert principal.is_authenticated and not principal.is_anonymous and not principal.has_perm("x")
    assert principal.pk == f"ClientApplication/{app1.client_id}"


def test_invalid_token_raises_with_bearer_error(app1):
    from rest_framework.request import Request

    with pytest.raises(InvalidBearerToken) as info:
        BearerAuthentication().authenticate(Request(factory.get("/x", HTTP_AUTHORIZATION="Bearer nope")))
    assert info.value.bearer_error == "invalid_token"


def test_host_view_gets_the_decision(app1, alice):
    token = mint(client=app1, membership=alice, scope="patient/Observation.rs")
    response = HostObservations.as_view()(factory.get("/obs", HTTP_AUTHORIZATION=f"Bearer {token}"))
    assert response.status_code == 200
    assert response.data["outcome"] == "filtered"
    assert [COMPARTMENT_PARAM, alice.profile] in response.data["filters"][0]
    response = HostObservations.as_view()(factory.post("/obs", {}, HTTP_AUTHORIZATION=f"Bearer {token}"))
    assert response.status_code == 403
    assert response.data["issue"][0]["code"] == "forbidden"
    response = HostObservations.as_view()(factory.get("/obs"))
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer ")


def test_scope_permission_requires_a_resource_scope(app1, alice, practitioner):
    plain = mint(client=app1, membership=alice, scope="openid")
    assert ScopeOnly.as_view()(factory.get("/obs", HTTP_AUTHORIZATION=f"Bearer {plain}")).status_code == 403
    scoped = mint(client=app1, membership=practitioner, scope="user/Observation.rs")
    assert ScopeOnly.as_view()(factory.get("/obs", HTTP_AUTHORIZATION=f"Bearer {scoped}")).data["outcome"] == "allowed"
    assert ScopeOnly.as_view()(factory.post("/obs", {}, HTTP_AUTHORIZATION=f"Bearer {scoped}")).status_code == 403
    no_context = mint(client=app1, membership=practitioner, scope="patient/Observation.rs")
    assert ScopeOnly.as_view()(factory.get("/obs", HTTP_AUTHORIZATION=f"Bearer {no_context}")).status_code == 403


@pytest.mark.parametrize(("scope", "malformed"), [
    ("patient/Observation.sr", True),  # v2 letters out of order
    ("patient/Observation.x", True),
    ("patient/observation.rs", True),
    ("patient/Observation.read?code=1", True),  # v1 has no constraints
    ("user/*.write", False),
])
def test_malformed_scopes_grant_nothing(app1, practitioner, scope, malformed):
    token = mint(client=app1, membership=practitioner, scope=scope)
    response = ScopeOnly.as_view()(factory.get("/obs", HTTP_AUTHORIZATION=f"Bearer {token}"))
    assert response.status_code == 403  # user/*.write grants no search either


def test_effective_policy_for_user_logins(app1, alice, project1):
    policy = effective_policy_for(_context(mint(client=app1, membership=alice)))
    decision = policy.decide("Observation", "read")
    assert decision.outcome == "filtered" and decision.filters == ((("subject", alice.profile),),)
    assert policy.decide("Encounter", "read").outcome == "forbidden"
    scoped = effective_policy_for(_context(mint(client=app1, membership=alice, scope="patient/*.rs")))
    assert scoped.decide("Observation", "read").filters == (
        (("subject", alice.profile), (COMPARTMENT_PARAM, alice.profile)),)
    assert scoped.decide("Observation", "update").outcome == "forbidden"
    free = MembershipFactory(project=project1, profile_type="Practitioner")
    assert effective_policy_for(_context(mint(client=app1, membership=free))).decide(
        "Encounter", "delete").outcome == "allowed"


def test_effective_policy_for_client_credentials(project1, app1):
    assert effective_policy_for(_context(mint(client=app1))).decide("Patient", "create").outcome == "allowed"
    policy = AccessPolicyFactory(project=project1, resources=[{"resourceType": "Organization", "readonly": True}])
    limited = ClientApplicationFactory(project=project1, access_policy=policy)
    compiled = effective_policy_for(_context(mint(client=limited)))
    assert compiled.decide("Organization", "search").outcome == "allowed"
    assert compiled.decide("Organization", "update").outcome == "forbidden"
    assert compiled.decide("Patient", "read").outcome == "forbidden"


def test_user_login_without_membership_gets_nothing(app1, alice):
    context = _context(mint(client=app1, membership=alice))
    login = Login.objects.get(pk=context.login.pk)
    login.membership = None  # a user login whose profile was never chosen
    policy = effective_policy_for(AccessContext(context.claims, login))
    assert policy.decide("Patient", "read").outcome == "forbidden"


@pytest.mark.parametrize(("exc", "status", "code"), [
    (Http404(), 404, "not-found"),
    (DjangoPermissionDenied(), 403, "forbidden"),
    (exceptions.PermissionDenied(), 403, "forbidden"),
    (exceptions.NotFound(), 404, "not-found"),
    (exceptions.MethodNotAllowed("PATCH"), 405, "not-supported"),
    (exceptions.ParseError(), 400, "invalid"),
    (exceptions.UnsupportedMediaType("text/plain"), 415, "not-supported"),
    (exceptions.Throttled(wait=3), 429, "throttled"),
    (PreconditionFailed(), 412, "conflict"),
])
def test_exception_handler_emits_operation_outcomes(exc, status, code):
    response = exception_handler(exc, {})
    assert response.status_code == status
    assert response.data["resourceType"] == "OperationOutcome"
    assert response.data["issue"][0]["code"] == code
    if status == 429:
        assert response["Retry-After"] == "3"


def test_exception_handler_validation_error_names_the_field():
    response = exception_handler(exceptions.ValidationError({"name": ["This field is required."]}), {})
    assert response.status_code == 400
    assert response.data["issue"][0]["expression"] == ["name"]
    assert response.data["issue"][0]["details"]["text"] == "This field is required."


def test_exception_handler_challenges_401():
    exc = InvalidBearerToken("invalid_token", 'Expired "token"')
    exc.auth_header = 'Bearer realm="r"'
    response = exception_handler(exc, {})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == (
        'Bearer realm="r", error="invalid_token", error_description="Expired \'token\'"')
    assert response.data["issue"][0]["code"] == "login"


def test_exception_handler_leaves_bugs_to_django():
    assert exception_handler(RuntimeError("boom"), {}) is None


def test_an_invalid_stored_policy_grants_nothing(project1, app1):
    from medplum_auth.models import AccessPolicy

    broken = AccessPolicy.objects.create(project=project1, name="broken", resources=[{"resourceType": "*", "x": 1}])
    limited = ClientApplicationFactory(project=project1, access_policy=broken)
    assert effective_policy_for(_context(mint(client=limited))).decide("Patient", "read").outcome == "forbidden"
