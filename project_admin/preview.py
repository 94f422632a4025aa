"""The policy preview: what a member's or a client's token may do, in plain words.

Only :mod:`medplum_auth.access` decides (``login_inputs``, ``compile_policy``,
``EffectivePolicy.describe`` and ``explain``), the same code the FHIR API enforces; this module
only picks its inputs the way a login gets them: the member's policy and parameters
(``%profile``, ``%patient``), the policy of the client the member signs in through, the token's
scopes and its patient context (a Patient member's own profile).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medplum_auth.access import (
    Decision,
    EffectivePolicy,
    LoginInputs,
    client_restricts_users,
    compile_policy,
    explain,
    login_inputs,
)
from medplum_auth.models import AccessPolicy, ClientApplication, ProjectMembership
from medplum_auth.scopes import parse_resource_scope

MEMBER_SIDE = "member's policy"
CLIENT_SIDE = "client's policy"
SCOPES_SIDE = "scopes"


@dataclass
class Answer:
    line: str
    decision: Decision | None = None
    error: str = ""
    #: Each factor's own answer (member's policy, client's policy, scopes) when a client's policy applies.
    sides: list[tuple[str, Decision]] = field(default_factory=list)

    @property
    def decided_by(self) -> list[str]:
        """The policies that forbade (or filtered) the request, when the answer is not 'allowed'."""
        if self.decision is None or self.decision.outcome == "allowed":
            return []
        return [label for label, decision in self.sides if decision.outcome == self.decision.outcome] or \
            [label for label, decision in self.sides if decision.outcome != "allowed"]


@dataclass
class Preview:
    subject: str
    policy: AccessPolicy | None
    parameters: dict[str, str]
    scopes: list[str]
    patient: str | None
    effective: EffectivePolicy
    answers: list[Answer] = field(default_factory=list)
    #: The client a member signs in through, and whether its policy restricts them.
    through: ClientApplication | None = None
    client_restricts: bool = False
    sides: list[tuple[str, EffectivePolicy]] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        return self.effective.describe()


def inputs(subject: ProjectMembership | ClientApplication | AccessPolicy, *, patient: str = "",
           profile: str = "", through: ClientApplication | None = None) -> tuple[str, AccessPolicy | None,
                                                                                  LoginInputs]:
    """(label, policy, the login's policy inputs) of a login by ``subject`` (through ``through``)."""
    if isinstance(subject, ProjectMembership):
        label = f"{subject.profile_display or subject.profile} ({subject.profile})"
        login = login_inputs(membership=subject, client=through)
        return label, subject.access_policy, LoginInputs(login.rules, login.parameters,
                                                         login.patient or patient or None, login.client_rules)
    if isinstance(subject, ClientApplication):
        login = login_inputs(client=subject)
        return f"{subject.name} ({subject.reference})", subject.access_policy, \
            LoginInputs(login.rules, login.parameters, patient or None)
    reference = profile or "Patient/example"
    own = reference if reference.startswith("Patient/") else None
    # A policy on its own stands for a member's: the client restricts it as it would them.
    client_rules = _client_rules(through) if through is not None else None
    return f"{subject.name} as {reference}", subject, \
        LoginInputs(subject.resources, {"profile": reference, "patient": reference}, patient or own, client_rules)


def _client_rules(client: ClientApplication) -> list[dict[str, Any]] | None:
    policy = client.access_policy
    return policy.resources if policy is not None and client_restricts_users() else None


def build(subject: ProjectMembership | ClientApplication | AccessPolicy, *, scopes: str = "", patient: str = "",
          profile: str = "", requests: list[str] | None = None,
          through: ClientApplication | None = None) -> Preview:
    label, policy, login = inputs(subject, patient=patient, profile=profile, through=through)
    scope_list = scopes.split()
    effective = login.compile(scope_list)
    preview = Preview(label, policy, login.parameters, scope_list, login.patient, effective, through=through,
                      client_restricts=login.client_rules is not None)
    if login.client_rules is not None:
        # Each factor on its own, so the page can say which one forbade or filtered a request.
        preview.sides = [(MEMBER_SIDE, compile_policy(login.rules, login.parameters)),
                         (CLIENT_SIDE, compile_policy(login.client_rules, login.parameters))]
        if any(parse_resource_scope(scope) for scope in scope_list):
            preview.sides.append((SCOPES_SIDE, compile_policy(None, login.parameters, scope_list, login.patient)))
    for line in requests or []:
        try:
            answer = Answer(line, explain(effective, line))
        except ValueError as exc:
            preview.answers.append(Answer(line, error=str(exc)))
            continue
        answer.sides = [(side, explain(side_policy, line)) for side, side_policy in preview.sides]
        preview.answers.append(answer)
    return preview
