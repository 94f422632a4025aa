"""The effective access policy of a token: policy rules ∩ SMART scopes ∩ patient context.

Pure code (no models, no requests), shared by the FHIR API's enforcement and the Project
Admin preview, so that what the preview says is what the API does.

* A **grant** allows a set of interactions on one resource type (or ``*``), optionally only on
  instances matching criteria (``param=value`` pairs, all of which must hold).
* A request is **forbidden** when no grant covers its type and interaction (→ 403), **filtered**
  when every covering grant restricts instances (reads outside them → 404, searches are
  narrowed in the query), and **allowed** when a covering grant has no restriction.
* SMART scopes (SMART App Launch 2.2 §3) narrow each policy rule: interactions are intersected
  with the scope's permissions, the scope's ``?param=value`` constraints are ANDed in, and a
  ``patient/`` scope confines instances to the token's patient compartment. With no SMART
  resource scope at all the policy applies alone (Medplum's behaviour); ``patient/`` scopes
  without a patient context grant nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.core.exceptions import ValidationError

from .policies import INTERACTIONS, substitute_parameters, validate_rules
from .scopes import ResourceScope, parse_resource_scope

# SMART v2 permission letters → FHIR interactions.
PERMISSION_INTERACTIONS: dict[str, frozenset[str]] = {
    "c": frozenset({"create"}),
    "r": frozenset({"read", "vread", "history"}),
    "u": frozenset({"update"}),
    "d": frozenset({"delete"}),
    "s": frozenset({"search"}),
}
COMPARTMENT_PARAM = "_compartment"

Criteria = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Grant:
    resource_type: str
    interactions: frozenset[str]
    criteria: Criteria = ()
    hidden_fields: tuple[str, ...] = ()
    readonly_fields: tuple[str, ...] = ()

    def covers(self, resource_type: str, interaction: str) -> bool:
        return self.resource_type in ("*", resource_type) and interaction in self.interactions


@dataclass(frozen=True)
class Decision:
    outcome: str  # "allowed" | "filtered" | "forbidden"
    filters: tuple[Criteria, ...] = ()  # OR of AND-ed criteria when outcome == "filtered"
    reason: str = ""

    @property
    def permitted(self) -> bool:
        return self.outcome != "forbidden"


@dataclass(frozen=True)
class EffectivePolicy:
    """Immutable: one compiled policy is shared by every request with the same inputs."""

    grants: tuple[Grant, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "grants", tuple(self.grants))

    def decide(self, resource_type: str, interaction: str) -> Decision:
        covering = [g for g in self.grants if g.covers(resource_type, interaction)]
        if not covering:
            return Decision("forbidden", reason=f"no rule allows {interaction} on {resource_type}")
        if any(not g.criteria for g in covering):
            return Decision("allowed")
        return Decision("filtered", filters=tuple(dict.fromkeys(g.criteria for g in covering)))

    def hidden_fields(self, resource_type: str) -> tuple[str, ...]:
        """Medplum: the hidden fields of the first rule that matches the type."""
        for grant in self.grants:
            if grant.resource_type in ("*", resource_type):
                return grant.hidden_fields
        return ()

    def readonly_fields(self, resource_type: str) -> tuple[str, ...]:
        for grant in self.grants:
            if grant.resource_type in ("*", resource_type):
                return grant.readonly_fields
        return ()

    def describe(self) -> list[str]:
        """Plain words, one line per grant: 'May read and search Observation where subject = Patient/1'."""
        lines = []
        for grant in self.grants:
            verbs = [i for i in INTERACTIONS if i in grant.interactions]
            what = "any resource type" if grant.resource_type == "*" else grant.resource_type
            line = f"May {_join(verbs)} {what}"
            if grant.criteria:
                line += " where " + " and ".join(_describe_pair(k, v) for k, v in grant.criteria)
            if grant.hidden_fields:
                line += f"; hidden: {', '.join(grant.hidden_fields)}"
            if grant.readonly_fields:
                line += f"; read-only: {', '.join(grant.readonly_fields)}"
            lines.append(line)
        return lines or ["May do nothing"]


def _describe_pair(name: str, value: str) -> str:
    if name == COMPARTMENT_PARAM:
        return f"it belongs to {value}"
    return f"{name} = {value}"


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1] if words else "nothing"


def _grant_type(rule: dict[str, Any]) -> str:
    """A ``*`` rule with ``Observation?…`` criteria grants on Observation only."""
    if rule["resourceType"] == "*" and rule.get("criteria"):
        return rule["criteria"].partition("?")[0]
    return rule["resourceType"]


def _criteria(text: str | None) -> Criteria:
    if not text:
        return ()
    _type, _, query = text.partition("?")
    return tuple(parse_qsl(query, keep_blank_values=True))


COMPILED_POLICIES_MAX = 1024
_compiled_policies: dict[tuple[Any, ...], EffectivePolicy] = {}


def compile_policy(
    rules: list[dict[str, Any]] | None,
    parameters: dict[str, str],
    scopes: list[str] | None = None,
    patient: str | None = None,
) -> EffectivePolicy:
    """The effective policy for a login.

    ``rules`` are a validated policy's rules (``None`` = no policy = full access, Medplum's
    legacy default); ``parameters`` fill ``%patient``/``%profile``; ``scopes`` are the token's
    scopes; ``patient`` is the patient context (``Patient/<id>``) for ``patient/`` scopes.

    Compiled policies are kept in memory keyed by these inputs themselves (the rules by their
    ``repr``, exact for JSON values), never by a policy's id: an edited policy is a new key, so
    nothing can be served from a stale compilation.
    """
    key = (repr(rules), tuple(sorted(parameters.items())), tuple(scopes or ()), patient)
    policy = _compiled_policies.get(key)
    if policy is None:
        if len(_compiled_policies) >= COMPILED_POLICIES_MAX:
            _compiled_policies.clear()
        policy = _compiled_policies[key] = _compile_policy(rules, parameters, scopes, patient)
    return policy


def _compile_policy(rules: list[dict[str, Any]] | None, parameters: dict[str, str], scopes: list[str] | None,
                    patient: str | None) -> EffectivePolicy:
    if rules is None:
        base = [{"resourceType": "*", "interaction": list(INTERACTIONS)}]
    else:
        try:
            # Normalise here too (readonly → interactions …): a stored policy that skipped
            # validation must never grant more than it says; an invalid one grants nothing.
            base = substitute_parameters(validate_rules(rules), parameters)
        except ValidationError:
            return EffectivePolicy([])
    policy_grants = [
        Grant(_grant_type(r), frozenset(r["interaction"]), _criteria(r.get("criteria")),
              tuple(r.get("hiddenFields", ())), tuple(r.get("readonlyFields", ())))
        for r in base
    ]
    smart = [s for s in (parse_resource_scope(scope) for scope in scopes or []) if s is not None]
    if not smart:
        return EffectivePolicy(policy_grants)
    grants: list[Grant] = []
    for scope in smart:
        for grant in policy_grants:
            narrowed = _intersect(grant, scope, patient)
            if narrowed is not None:
                grants.append(narrowed)
    return EffectivePolicy(grants)


def _intersect(grant: Grant, scope: ResourceScope, patient: str | None) -> Grant | None:
    if grant.resource_type == "*":
        resource_type = scope.resource_type
    elif scope.resource_type in ("*", grant.resource_type):
        resource_type = grant.resource_type
    else:
        return None
    allowed = frozenset().union(*(PERMISSION_INTERACTIONS[p] for p in scope.permissions))
    interactions = grant.interactions & allowed
    if not interactions:
        return None
    criteria = grant.criteria + scope.criteria
    if scope.context == "patient":
        if not patient:
            return None  # a patient/ scope without a patient context grants nothing
        criteria += ((COMPARTMENT_PARAM, patient),)
    return Grant(resource_type, interactions, tuple(dict.fromkeys(criteria)), grant.hidden_fields,
                 grant.readonly_fields)


def parse_request_line(line: str) -> tuple[str, str, str | None, Criteria]:
    """``"GET Observation?subject=Patient/1"`` → (interaction, type, id, search params).

    Raises ``ValueError`` for lines that are not a FHIR REST interaction on a resource type.
    """
    method, _, target = line.strip().partition(" ")
    method = method.upper()
    parts = urlsplit(target.strip())
    segments = [s for s in parts.path.strip("/").split("/") if s]
    if segments[:2] == ["fhir", "R4"]:
        segments = segments[2:]
    if not segments or not segments[0][:1].isupper():
        raise ValueError("expected a line like 'GET Observation?subject=Patient/1'")
    resource_type, rest = segments[0], segments[1:]
    params = tuple(parse_qsl(parts.query, keep_blank_values=True))
    if method == "GET":
        if not rest:
            return "search", resource_type, None, params
        if len(rest) == 1:
            return ("history" if rest[0] == "_history" else "read"), resource_type, rest[0], params
        if len(rest) == 2 and rest[1] == "_history":
            return "history", resource_type, rest[0], params
        if len(rest) == 3 and rest[1] == "_history":
            return "vread", resource_type, rest[0], params
    elif method == "POST" and not rest:
        return "create", resource_type, None, params
    elif method == "PUT" and len(rest) == 1:
        return "update", resource_type, rest[0], params
    elif method == "DELETE" and len(rest) == 1:
        return "delete", resource_type, rest[0], params
    raise ValueError(f"unsupported request {method} {target}")


def explain(policy: EffectivePolicy, line: str) -> Decision:
    """Answer a request line for the Project Admin preview, in the words the API would act on."""
    interaction, resource_type, resource_id, _params = parse_request_line(line)
    decision = policy.decide(resource_type, interaction)
    if decision.outcome == "forbidden":
        return Decision("forbidden", reason=f"403 Forbidden: {decision.reason}.")
    if decision.outcome == "allowed":
        return Decision("allowed", reason=f"Allowed: {interaction} on any {resource_type}.")
    alternatives = " or ".join(
        "(" + " and ".join(_describe_pair(k, v) for k, v in criteria) + ")" for criteria in decision.filters)
    if interaction in ("search", "history") and resource_id is None:
        why = f"Filtered: only {resource_type} resources where {alternatives} are returned."
    else:
        target = f"{resource_type}/{resource_id}" if resource_id else f"the new {resource_type}"
        why = f"Filtered: {target} is reachable only if {alternatives}; otherwise 404 Not Found."
    return Decision("filtered", filters=decision.filters, reason=why)


def login_inputs(*, membership: Any = None, client: Any = None) -> tuple[list[dict[str, Any]] | None,
                                                                          dict[str, str], str | None]:
    """``(rules, parameters, patient context)`` of a login, for :func:`compile_policy`.

    The one place that decides them, for the FHIR API and the Project Admin preview alike:

    * a member: the membership's policy (``None`` = full access) and parameters (``%profile``,
      ``%patient`` defaulting to the profile); a Patient member's own profile is the patient context;
    * a client acting for itself (client_credentials): the client's policy, with ``%profile`` and
      ``%patient`` both the client (Medplum's default); no patient context.
    """
    if membership is not None:
        policy = membership.access_policy
        patient = membership.profile if membership.profile_type == "Patient" else None
        return (policy.resources if policy else None), membership.policy_parameters(), patient
    reference = client.reference
    policy = client.access_policy
    return (policy.resources if policy else None), {"profile": reference, "patient": reference}, None
