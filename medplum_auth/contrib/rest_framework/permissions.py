"""Type-level permissions from the token's effective policy (medplum.md §3.3).

A view tells the permission what is being attempted, either with ``get_fhir_target(request)``
returning ``(resource_type, interaction)`` (or ``None`` when there is nothing to decide yet,
e.g. an unknown type the view answers with 404), or with a ``resource_type`` attribute, the
interaction then following from the method (GET on a collection = ``search``, GET on an
instance = ``read``, POST = ``create``, PUT/PATCH = ``update``, DELETE = ``delete``).

A forbidden type or interaction is a 403; without valid credentials it is a 401. Instance-level
filtering (criteria, ``_compartment``) is the view's job: the :class:`~medplum_auth.access.Decision`
is left on ``request.policy_decision`` for it.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from medplum_auth.access import EffectivePolicy, compile_policy
from medplum_auth.bearer import AccessContext
from medplum_auth.scopes import parse_resource_scope

from .policy import effective_policy_for, patient_context

METHOD_INTERACTIONS = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}


def get_policy(request: Request) -> EffectivePolicy:
    """The effective policy of the request's token, compiled once per request."""
    policy = getattr(request, "medplum_policy", None)
    if policy is None:
        if not isinstance(request.auth, AccessContext):
            return EffectivePolicy([])
        policy = effective_policy_for(request.auth)
        request.medplum_policy = policy
    return policy


def fhir_target(request: Request, view: Any) -> tuple[str, str] | None:
    getter = getattr(view, "get_fhir_target", None)
    if getter is not None:
        return getter(request)
    resource_type = getattr(view, "resource_type", None)
    if not resource_type:
        return None
    if request.method in ("GET", "HEAD"):
        lookup = getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", "pk")
        interaction = "read" if view.kwargs.get(lookup) is not None else "search"
    else:
        interaction = METHOD_INTERACTIONS.get(request.method or "", "")
    return (resource_type, interaction) if interaction else None


class AccessPolicyPermission(BasePermission):
    """Allow what the token's effective policy (access policy ∩ SMART scopes) allows."""

    message = "Forbidden"

    def has_permission(self, request: Request, view: Any) -> bool:
        if not isinstance(request.auth, AccessContext):
            return False
        target = fhir_target(request, view)
        if target is None:
            return True
        decision = get_policy(request).decide(*target)
        request.policy_decision = decision
        return decision.permitted


class SmartScopePermission(BasePermission):
    """Allow only what the token's SMART resource scopes grant (SMART App Launch 2.2 §3).

    For host APIs without access policies. Unlike :class:`AccessPolicyPermission` a token
    without any SMART resource scope is refused; ``patient/`` scopes need a patient context.
    Instance constraints are left on ``request.policy_decision`` as with the policy permission.
    """

    message = "Forbidden"

    def has_permission(self, request: Request, view: Any) -> bool:
        context = request.auth
        if not isinstance(context, AccessContext):
            return False
        target = fhir_target(request, view)
        if target is None:
            return True
        scopes = [s for s in context.scopes if parse_resource_scope(s) is not None]
        if not scopes:
            return False
        decision = compile_policy(None, {}, scopes, patient_context(context)).decide(*target)
        request.policy_decision = decision
        return decision.permitted
