"""The effective access policy of a token: member policy ∩ client policy ∩ SMART scopes ∩ patient context.

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
* A user's login through a client with its own access policy is subject to **both** policies
  (:func:`compile_policy`'s ``client_rules``): a request is allowed only if both allow it, the
  filters of both sides apply together (each side's alternatives kept as alternatives), and the
  hidden and read-only fields of both sides apply. Medplum applies only the member's policy;
  ``MEDPLUM_AUTH["CLIENT_POLICY_RESTRICTS_USERS"] = False`` restores that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from django.core.exceptions import ValidationError

from .conf import auth_settings
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
class FieldRule:
    """The hidden and read-only fields a policy rule declares for a type (or ``*``)."""

    resource_type: str
    hidden_fields: tuple[str, ...] = ()
    readonly_fields: tuple[str, ...] = ()


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
    """Immutable: one compiled policy is shared by every request with the same inputs.

    ``field_rules`` holds, per policy the login is subject to (the member's, the client's), its
    rules' hidden and read-only fields in rule order. They come from the policies as written, not
    from ``grants``: a scope or the other side's policy that narrows a rule's interactions away
    must not also take its hidden fields away. ``None`` derives them from ``grants``.
    """

    grants: tuple[Grant, ...] = ()
    field_rules: tuple[tuple[FieldRule, ...], ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "grants", tuple(self.grants))
        if self.field_rules is None:
            object.__setattr__(self, "field_rules", (tuple(
                FieldRule(g.resource_type, g.hidden_fields, g.readonly_fields) for g in self.grants),))

    def decide(self, resource_type: str, interaction: str) -> Decision:
        covering = [g for g in self.grants if g.covers(resource_type, interaction)]
        if not covering:
            return Decision("forbidden", reason=f"no rule allows {interaction} on {resource_type}")
        if any(not g.criteria for g in covering):
            return Decision("allowed")
        return Decision("filtered", filters=tuple(dict.fromkeys(g.criteria for g in covering)))

    def hidden_fields(self, resource_type: str) -> tuple[str, ...]:
        """Medplum: the hidden fields of the first rule that matches the type; of each policy."""
        return self._fields(resource_type, "hidden_fields")

    def readonly_fields(self, resource_type: str) -> tuple[str, ...]:
        return self._fields(resource_type, "readonly_fields")

    def _fields(self, resource_type: str, kind: str) -> tuple[str, ...]:
        fields: tuple[str, ...] = ()
        for rules in self.field_rules or ():
            first = next((rule for rule in rules if rule.resource_type in ("*", resource_type)), None)
            if first is not None:
                fields += getattr(first, kind)
        return tuple(dict.fromkeys(fields))

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
    client_rules: list[dict[str, Any]] | None = None,
) -> EffectivePolicy:
    """The effective policy for a login.

    ``rules`` are a validated policy's rules (``None`` = no policy = full access, Medplum's
    legacy default); ``parameters`` fill ``%patient``/``%profile``; ``scopes`` are the token's
    scopes; ``patient`` is the patient context (``Patient/<id>``) for ``patient/`` scopes;
    ``client_rules`` are the policy of the client a user signed in through (``None`` = no
    restriction), filled with the same parameters: the login gets only what both allow.

    Compiled policies are kept in memory keyed by these inputs themselves (the rules by their
    ``repr``, exact for JSON values), never by a policy's id: an edited policy is a new key, so
    nothing can be served from a stale compilation.
    """
    key = (repr(rules), tuple(sorted(parameters.items())), tuple(scopes or ()), patient, repr(client_rules))
    policy = _compiled_policies.get(key)
    if policy is None:
        if len(_compiled_policies) >= COMPILED_POLICIES_MAX:
            _compiled_policies.clear()
        policy = _compiled_policies[key] = _compile_policy(rules, parameters, scopes, patient, client_rules)
    return policy


def _policy_grants(rules: list[dict[str, Any]] | None, parameters: dict[str, str]) -> list[Grant] | None:
    """The grants of one policy as written; ``None`` when the policy is invalid (it grants nothing)."""
    if rules is None:
        base = [{"resourceType": "*", "interaction": list(INTERACTIONS)}]
    else:
        try:
            # Normalise here too (readonly → interactions …): a stored policy that skipped
            # validation must never grant more than it says; an invalid one grants nothing.
            base = substitute_parameters(validate_rules(rules), parameters)
        except ValidationError:
            return None
    return [
        Grant(_grant_type(r), frozenset(r["interaction"]), _criteria(r.get("criteria")),
              tuple(r.get("hiddenFields", ())), tuple(r.get("readonlyFields", ())))
        for r in base
    ]


def _field_rules(grants: list[Grant]) -> tuple[FieldRule, ...]:
    return tuple(FieldRule(g.resource_type, g.hidden_fields, g.readonly_fields) for g in grants)


def _compile_policy(rules: list[dict[str, Any]] | None, parameters: dict[str, str], scopes: list[str] | None,
                    patient: str | None, client_rules: list[dict[str, Any]] | None = None) -> EffectivePolicy:
    policy_grants = _policy_grants(rules, parameters)
    if policy_grants is None:
        return EffectivePolicy([])
    field_rules = [_field_rules(policy_grants)]
    if client_rules is not None:
        client_grants = _policy_grants(client_rules, parameters)
        if client_grants is None:
            return EffectivePolicy([])
        field_rules.append(_field_rules(client_grants))
        policy_grants = [both for grant in policy_grants for restriction in client_grants
                         if (both := _meet(grant, restriction)) is not None]
    smart = [s for s in (parse_resource_scope(scope) for scope in scopes or []) if s is not None]
    if not smart:
        return EffectivePolicy(policy_grants, tuple(field_rules))
    grants: list[Grant] = []
    for scope in smart:
        for grant in policy_grants:
            narrowed = _intersect(grant, scope, patient)
            if narrowed is not None:
                grants.append(narrowed)
    return EffectivePolicy(grants, tuple(field_rules))


def _narrower_type(granted: str, wanted: str) -> str | None:
    """The resource type both cover: ``*`` meets any type, else the two must be the same."""
    if granted == "*":
        return wanted
    return granted if wanted in ("*", granted) else None


def _meet(grant: Grant, restriction: Grant) -> Grant | None:
    """What both grants allow: the narrower type, the common interactions, both criteria."""
    resource_type = _narrower_type(grant.resource_type, restriction.resource_type)
    if resource_type is None:
        return None
    interactions = grant.interactions & restriction.interactions
    if not interactions:
        return None
    return Grant(resource_type, interactions, tuple(dict.fromkeys(grant.criteria + restriction.criteria)),
                 tuple(dict.fromkeys(grant.hidden_fields + restriction.hidden_fields)),
                 tuple(dict.fromkeys(grant.readonly_fields + restriction.readonly_fields)))


def _intersect(grant: Grant, scope: ResourceScope, patient: str | None) -> Grant | None:
    resource_type = _narrower_type(grant.resource_type, scope.resource_type)
    if resource_type is None:
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


@dataclass(frozen=True)
class LoginInputs:
    """What a login's effective policy is compiled from (see :func:`login_inputs`)."""

    rules: list[dict[str, Any]] | None
    parameters: dict[str, str]
    patient: str | None
    client_rules: list[dict[str, Any]] | None = None

    def document(self) -> list[dict[str, Any]]:
        """The login's policy as Medplum ``AccessPolicy.resource`` rules (``/auth/me``), parameters
        filled in: the member's rules as written, or with a client policy, the rules both allow."""
        if self.client_rules is None:
            if self.rules is None:
                return [{"resourceType": "*"}]
            return substitute_parameters(self.rules, self.parameters)
        return [_rule_document(grant) for grant in compile_policy(
            self.rules, self.parameters, None, None, self.client_rules).grants]

    def unreachable_scopes(self, scopes: list[str]) -> list[str]:
        """The SMART resource scopes the client's policy allows nothing of (no type, no interaction
        in common), which a consent page must not offer as if the app could use them."""
        if self.client_rules is None:
            return []
        client_grants = _policy_grants(self.client_rules, self.parameters) or []
        unreachable = []
        for scope in scopes:
            parsed = parse_resource_scope(scope)
            if parsed is None:
                continue
            allowed = frozenset().union(*(PERMISSION_INTERACTIONS[p] for p in parsed.permissions))
            if not any(grant.interactions & allowed and _narrower_type(grant.resource_type, parsed.resource_type)
                       for grant in client_grants):
                unreachable.append(scope)
        return unreachable

    def compile(self, scopes: list[str] | None = None, patient: str | None = None) -> EffectivePolicy:
        """The effective policy with ``scopes``; ``patient`` (a launch patient) replaces the own one."""
        return compile_policy(self.rules, self.parameters, scopes, patient or self.patient, self.client_rules)


def _rule_document(grant: Grant) -> dict[str, Any]:
    rule: dict[str, Any] = {"resourceType": grant.resource_type}
    if grant.criteria:
        rule["criteria"] = f"{grant.resource_type}?{urlencode(grant.criteria, safe='/%')}"
    rule["interaction"] = [i for i in INTERACTIONS if i in grant.interactions]
    if grant.hidden_fields:
        rule["hiddenFields"] = list(grant.hidden_fields)
    if grant.readonly_fields:
        rule["readonlyFields"] = list(grant.readonly_fields)
    return rule


def client_restricts_users() -> bool:
    """Whether a client's policy also restricts the users who sign in through it (our default)."""
    return bool(auth_settings.CLIENT_POLICY_RESTRICTS_USERS)


def client_policy_rule() -> str:
    """One sentence on when a client's access policy applies, for every page that sets one."""
    if client_restricts_users():
        return ("The client's access policy restricts the app for every user who signs in through it "
                "(a request must be allowed by both the user's own access policy and this one, within the "
                "granted scopes) and for the client itself (client_credentials). Without one, users keep "
                "their own access and the client acting for itself has full access.")
    return ("The client's access policy applies only when the client acts for itself (client_credentials); "
            "users who sign in through it keep their own access (CLIENT_POLICY_RESTRICTS_USERS is off).")


def login_inputs(*, membership: Any = None, client: Any = None) -> LoginInputs:
    """The inputs of a login's effective policy, for :func:`compile_policy`.

    The one place that decides them, for the FHIR API, ``/auth/me``, the patient picker and the
    Project Admin preview alike:

    * a member: the membership's policy (``None`` = full access) and parameters (``%profile``,
      ``%patient`` defaulting to the profile); a Patient member's own profile is the patient context;
      signing in through ``client``, the client's policy (if any) restricts the login too, with the
      member's parameters (unless ``CLIENT_POLICY_RESTRICTS_USERS`` is off);
    * a client acting for itself (client_credentials): the client's policy, with ``%profile`` and
      ``%patient`` both the client (Medplum's default); no patient context.
    """
    if membership is not None:
        policy = membership.access_policy
        patient = membership.profile if membership.profile_type == "Patient" else None
        client_policy = client.access_policy if client is not None and client_restricts_users() else None
        return LoginInputs(policy.resources if policy else None, membership.policy_parameters(), patient,
                           client_policy.resources if client_policy else None)
    reference = client.reference
    policy = client.access_policy
    return LoginInputs(policy.resources if policy else None, {"profile": reference, "patient": reference}, None)
