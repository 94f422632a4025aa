"""The policy preview: what a member's or a client's token may do, in plain words.

Only :mod:`medplum_auth.access` decides (``compile_policy``, ``EffectivePolicy.describe`` and
``explain``), the same code the FHIR API enforces; this module only picks its inputs the way a
login gets them: the member's policy and parameters (``%profile``, ``%patient``), the token's
scopes and its patient context (a Patient member's own profile).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medplum_auth.access import Decision, EffectivePolicy, compile_policy, explain, login_inputs
from medplum_auth.models import AccessPolicy, ClientApplication, ProjectMembership


@dataclass
class Answer:
    line: str
    decision: Decision | None = None
    error: str = ""


@dataclass
class Preview:
    subject: str
    policy: AccessPolicy | None
    parameters: dict[str, str]
    scopes: list[str]
    patient: str | None
    effective: EffectivePolicy
    answers: list[Answer] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        return self.effective.describe()


def inputs(subject: ProjectMembership | ClientApplication | AccessPolicy, *, patient: str = "",
           profile: str = "") -> tuple[str, AccessPolicy | None, dict[str, str], str | None]:
    """(label, policy, parameters, patient context) of a login by ``subject``."""
    if isinstance(subject, ProjectMembership):
        label = f"{subject.profile_display or subject.profile} ({subject.profile})"
        _rules, parameters, own_patient = login_inputs(membership=subject)
        return label, subject.access_policy, parameters, own_patient or patient or None
    if isinstance(subject, ClientApplication):
        _rules, parameters, _none = login_inputs(client=subject)
        return f"{subject.name} ({subject.reference})", subject.access_policy, parameters, patient or None
    reference = profile or "Patient/example"
    return f"{subject.name} as {reference}", subject, {"profile": reference, "patient": reference}, \
        patient or (reference if reference.startswith("Patient/") else None)


def build(subject: ProjectMembership | ClientApplication | AccessPolicy, *, scopes: str = "", patient: str = "",
          profile: str = "", requests: list[str] | None = None) -> Preview:
    label, policy, parameters, context = inputs(subject, patient=patient, profile=profile)
    scope_list = scopes.split()
    effective = compile_policy(policy.resources if policy is not None else None, parameters, scope_list, context)
    preview = Preview(label, policy, parameters, scope_list, context, effective)
    for line in requests or []:
        try:
            preview.answers.append(Answer(line, explain(effective, line)))
        except ValueError as exc:
            preview.answers.append(Answer(line, error=str(exc)))
    return preview
