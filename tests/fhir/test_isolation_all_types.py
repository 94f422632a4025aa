"""Isolation for every resource type and every route (issue 5, "Done when").

The matrix is type × route × token kind:

* **types**: the 14 types served before the R4 data (``tests.fhir.conftest.LEGACY_PARAMS``), and at
  the end of the module twelve of the types served from it (Communication, Task, Appointment …),
  whose Patient compartment comes from the R4 CompartmentDefinition;
* **routes**: read, vread, history, update, patch (JSON Patch), delete, create, search with no
  parameter and with each of the type's parameters (plus ``_id``, ``_lastUpdated``, ``_compartment``), and
  ``_include`` through each of the type's reference parameters, and ``_revinclude`` of every
  type's reference parameters that refer to it;
* **token kinds** (project 1):

  - ``patient_policy``: patient A under the demo-style patient policy: ``<Type>?<param>=%patient``
    for every compartment type (the demo's parameters), ``Patient?_id=%patient.id``, Organization
    read/search without criteria, nothing on Practitioner;
  - ``patient_scope``: the same login with ``patient/*.cruds`` (policy ∩ scope);
  - ``launch_scope``: an unrestricted practitioner with patient A as launch context and
    ``patient/*.cruds``: the scope alone confines the token;
  - ``client``: a ``client_credentials`` client without a policy (all of project 1);
  - ``practitioner``: a practitioner whose policy grants one type only (the type under test).

The data (one module-scoped world, rolled back at the end of the module): in project 1, for each
type, a resource of patient A (``<Type>-a``), one of patient B (``<Type>-b``) and, for
compartment types, one that moved from B to A (``<Type>-m``: version 1 is B's, version 2 A's).
A's resources also refer to B's (performer, asserter, author, encounter …) and to ids that exist
only in project 2, to trap ``_include``. Project 2 holds **twins with the same ids**
(``<Type>-a``, ``<Type>-b``, and the same Patient ids) and ``<Type>-p2`` found only there; its
``<Type>-b`` twin is in ``Patient/Patient-a``'s compartment, so a query that kept the patient
filter but lost the project one would hand it to patient A. Every resource carries a
``meta.tag`` naming its project, so a twin is told apart from the original.

Rules asserted, for each case:

* compartment types (all but Practitioner and Organization): a patient-A token reads, finds,
  includes and writes A's resources only; B's are 404 on read/vread/history/update/patch/delete,
  never in a searchset (matches, includes, ``total``) and unchanged in the database after the attempt;
  version 1 of the moved resource (B's) is never served;
* Practitioner and Organization belong to no patient compartment: a patient policy exposes them
  only when it grants the type (here Organization read/search: all of project 1's; Practitioner:
  403), and a ``patient/`` scope never exposes them (404, empty searches), whatever the policy;
* project 2's resources never appear for any project-1 token: 404 by id (a same id answers with
  project 1's resource), absent from every searchset, never changed by a project-1 write;
* positive side: what the token may see is served (A's own resources for every kind; B's for the
  client and the practitioner), so each assertion can fail.

Expected searchsets are computed from the world (the index values of each stored resource and
the rules above), and compared exactly: ids, project tags, and ``total``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import pytest
from django.db import connection, transaction
from django.db.models import Count

from fhir_api.models import Resource
from fhir_api.repository import Repository
from fhir_api.search_params import index_values, normalise_string, param_values
from medplum_auth import tokens
from medplum_auth.management.commands.medplum_seed_demo import PATIENT_COMPARTMENT
from medplum_auth.models import Login
from tests.factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory, ProjectFactory
from tests.fhir.conftest import Api, assert_outcome, legacy_parameters, mint, seed
from tests.fhir.test_r4_types import NEW_TYPES, new_resource

pytestmark = pytest.mark.django_db
SEARCH_PARAMETERS = legacy_parameters()  # the 14 types' parameters (tests/fhir/conftest.py)

TYPES = ("Patient", "Practitioner", "RelatedPerson", "Organization", "Encounter", "Observation", "Condition",
         "AllergyIntolerance", "MedicationRequest", "Immunization", "Procedure", "DiagnosticReport",
         "DocumentReference", "CarePlan")
NON_COMPARTMENT = ("Practitioner", "Organization")
# The demo policy's parameters, and the patient reference parameter of the types it leaves out.
COMPARTMENT_PARAMS = {**PATIENT_COMPARTMENT, "RelatedPerson": "patient", "Procedure": "patient",
                      "CarePlan": "patient"}
READS = ("read", "vread", "history", "search")
KINDS = ("patient_policy", "patient_scope", "launch_scope", "client", "practitioner")
PATIENT_KINDS = ("patient_policy", "patient_scope", "launch_scope")
TAG = "urn:test:isolation-project"
IDENT = "urn:test:isolation-id"
SCT = "http://snomed.info/sct"
A, B = "Patient/Patient-a", "Patient/Patient-b"


def demo_style_policy() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [{"resourceType": "Patient", "criteria": "Patient?_id=%patient.id"}]
    rules += [{"resourceType": t, "criteria": f"{t}?{p}=%patient"} for t, p in COMPARTMENT_PARAMS.items()]
    rules.append({"resourceType": "Organization", "interaction": ["read", "vread", "history", "search"]})
    return rules


# --- resources -----------------------------------------------------------------------------------

def _cc(code: str, system: str = SCT) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}], "text": code}


def _ref(reference: str) -> dict[str, str]:
    return {"reference": reference}


def build(rtype: str, side: str, variant: str = "") -> dict[str, Any]:
    """A minimal valid ``rtype`` of patient ``side`` ("a" or "b") giving every parameter a value.

    Besides its own patient, practitioner, organization and encounter, each resource names the
    other side's patient, encounter and related person, and ids found only in project 2.
    """
    x, y = side, "b" if side == "a" else "a"
    me, other = f"Patient/Patient-{x}", f"Patient/Patient-{y}"
    gp, org, enc = f"Practitioner/Practitioner-{x}", f"Organization/Organization-{x}", f"Encounter/Encounter-{x}"
    other_enc, other_rp = f"Encounter/Encounter-{y}", f"RelatedPerson/RelatedPerson-{y}"
    p2_gp, p2_org = "Practitioner/Practitioner-p2", "Organization/Organization-p2"
    day = {"a": "2020-02-03", "b": "2021-06-15"}[x]
    when, later = f"{day}T10:00:00Z", f"{day}T11:00:00Z"
    n = 0 if x == "a" else 1
    code = _cc(f"{rtype.lower()}-{x}{variant}")
    category = [_cc(f"category-{x}", "urn:test:category")]
    person = {"name": [{"family": ["Anders", "Baker"][n] + rtype, "given": [["Alice", "Bob"][n]]}],
              "gender": ["female", "male"][n], "active": x == "a"}
    content: dict[str, Any] = {
        "Patient": lambda: {**person, "birthDate": day, "managingOrganization": _ref(org),
                            "generalPractitioner": [_ref(gp), _ref(f"Practitioner/Practitioner-{y}"), _ref(p2_gp)]},
        "Practitioner": lambda: person,
        "RelatedPerson": lambda: {**person, "patient": _ref(me)},
        "Organization": lambda: {"name": ["Alpha", "Beta"][n] + " Clinic", "alias": [f"alias-{x}"],
                                 "active": x == "a", "type": [_cc(f"orgtype-{x}", "urn:test:orgtype")]},
        "Encounter": lambda: {
            "status": ["finished", "planned"][n],
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": ["AMB", "IMP"][n]},
            "type": [code], "subject": _ref(me), "serviceProvider": _ref(org),
            "participant": [{"individual": _ref(gp)}, {"individual": _ref(other_rp)}, {"individual": _ref(p2_gp)}],
            "period": {"start": when, "end": later}},
        "Observation": lambda: {
            "status": ["final", "preliminary"][n], "code": code, "category": category, "subject": _ref(me),
            "encounter": _ref(other_enc), "effectiveDateTime": when,
            "performer": [_ref(gp), _ref(other), _ref(other_rp), _ref(p2_org)]},
        "Condition": lambda: {
            "clinicalStatus": _cc(["active", "relapse"][n], "http://terminology.hl7.org/CodeSystem/condition-clinical"),
            "verificationStatus": _cc(["confirmed", "provisional"][n],
                                      "http://terminology.hl7.org/CodeSystem/condition-ver-status"),
            "category": category, "code": code, "subject": _ref(me), "encounter": _ref(enc),
            "onsetDateTime": when, "recordedDate": later, "asserter": _ref(other)},
        "AllergyIntolerance": lambda: {
            "clinicalStatus": _cc(["active", "inactive"][n],
                                  "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"),
            "verificationStatus": _cc(["confirmed", "unconfirmed"][n],
                                      "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"),
            "category": [["food", "medication"][n]], "code": code, "patient": _ref(me), "encounter": _ref(enc),
            "recordedDate": when, "recorder": _ref(gp), "asserter": _ref(other_rp)},
        "MedicationRequest": lambda: {
            "status": ["active", "completed"][n], "intent": ["order", "plan"][n], "category": category,
            "subject": _ref(me), "encounter": _ref(other_enc), "authoredOn": when, "requester": _ref(other),
            **({"medicationReference": _ref(f"Medication/medication-{x}")} if variant else
               {"medicationCodeableConcept": code})},
        "Immunization": lambda: {
            "status": ["completed", "entered-in-error"][n], "vaccineCode": code, "patient": _ref(me),
            "encounter": _ref(enc), "occurrenceDateTime": when,
            "performer": [{"actor": _ref(gp)}, {"actor": _ref(p2_gp)},
                          {"actor": _ref(f"Organization/Organization-{y}")}]},
        "Procedure": lambda: {
            "status": ["completed", "in-progress"][n], "code": code, "category": category[0], "subject": _ref(me),
            "encounter": _ref(enc), "performedDateTime": when,
            "performer": [{"actor": _ref(gp)}, {"actor": _ref(other)}, {"actor": _ref(other_rp)}]},
        "DiagnosticReport": lambda: {
            "status": ["final", "preliminary"][n], "code": code, "category": category, "subject": _ref(me),
            "encounter": _ref(other_enc), "effectiveDateTime": when,
            "performer": [_ref(gp), _ref(f"Organization/Organization-{y}"), _ref(p2_org)]},
        "DocumentReference": lambda: {
            "status": ["current", "superseded"][n], "type": code, "category": category, "subject": _ref(me),
            "date": when, "author": [_ref(gp), _ref(other), _ref(other_rp)],
            "context": {"encounter": [_ref(enc), _ref(other_enc)]},
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}}]},
        "CarePlan": lambda: {
            "status": ["active", "completed"][n], "intent": ["plan", "order"][n], "category": category,
            "subject": _ref(me), "encounter": _ref(other_enc), "period": {"start": when, "end": later}},
    }[rtype]()
    return {"resourceType": rtype, "meta": {"tag": [{"system": TAG, "code": "project-1"}]},
            "identifier": [{"system": IDENT, "value": f"{rtype}-{x}{variant}"}], **copy.deepcopy(content)}


def _retag(content: dict[str, Any], project: int, identifier: str | None = None) -> dict[str, Any]:
    content = copy.deepcopy(content)
    content["meta"] = {"tag": [{"system": TAG, "code": f"project-{project}"}]}
    if identifier:
        content["identifier"] = [{"system": IDENT, "value": identifier}]
    return content


def _swap(content: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    return json.loads(json.dumps(content).replace(f'"{old}"', f'"{new}"'))


# --- the world -----------------------------------------------------------------------------------

@dataclass
class Item:
    """One stored resource and what the test knows of it: its versions and their owner patient."""

    project: int
    rtype: str
    rid: str
    versions: list[tuple[dict[str, Any], str | None]]  # (content, "a" | "b" | None) oldest first

    @property
    def content(self) -> dict[str, Any]:
        return self.versions[-1][0]

    @property
    def owner(self) -> str | None:
        return self.versions[-1][1]


@dataclass
class World:
    projects: dict[int, Any]
    items: dict[tuple[int, str, str], Item] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    practitioner_tokens: dict[str, str] = field(default_factory=dict)

    def of(self, project: int, rtype: str) -> list[Item]:
        return [item for (p, t, _), item in self.items.items() if p == project and t == rtype]

    def token(self, kind: str, rtype: str) -> str:
        return self.practitioner_tokens[rtype] if kind == "practitioner" else self.tokens[kind]


def _store(world: World, project: int, rtype: str, rid: str, versions: list[tuple[dict[str, Any], str | None]]):
    repo = Repository(world.projects[project].pk, None)
    for number, (content, _owner) in enumerate(versions):
        if number == 0:
            repo.create(rtype, content, resource_id=rid)
        else:
            repo.update(rtype, rid, {**content, "id": rid})
    stored = Resource.objects.get(project=world.projects[project], resource_type=rtype, resource_id=rid)
    kept = [(v.content, owner) for v, (_c, owner) in zip(stored.versions.order_by("version_id"), versions, strict=True)]
    world.items[(project, rtype, rid)] = Item(project, rtype, rid, kept)


def _populate(world: World) -> None:
    for rtype in TYPES:
        compartment_type = rtype not in NON_COMPARTMENT
        variants = ["", "2"] if rtype == "MedicationRequest" else [""]  # medication[x]: code or reference
        for variant in variants:
            for side in ("a", "b"):
                _store(world, 1, rtype, f"{rtype}-{side}{variant}",
                       [(build(rtype, side, variant), side if compartment_type else None)])
        if compartment_type and rtype != "Patient":  # moved from B to A: version 1 is B's
            moved = f"{rtype}-m"
            _store(world, 1, rtype, moved, [(_retag(build(rtype, "b"), 1, moved), "b"),
                                            (_retag(build(rtype, "a"), 1, moved), "a")])
        # Project 2: the same ids, and one of its own; its "-b" twin is in Patient/Patient-a's compartment.
        _store(world, 2, rtype, f"{rtype}-a", [(_retag(build(rtype, "a"), 2), None)])
        _store(world, 2, rtype, f"{rtype}-b", [(_retag(_swap(build(rtype, "b"), B, A), 2), None)])
        _store(world, 2, rtype, f"{rtype}-p2", [(_retag(build(rtype, "a"), 2, f"{rtype}-p2"), None)])


# The world's tokens serve the whole module (minutes on a loaded machine): 300 s tokens expired
# mid-module on a slow PostgreSQL run, and every later case answered 401.
WORLD_TOKEN_LIFETIME = 3600


def world_mint(**kwargs: Any) -> str:
    return mint(lifetime=WORLD_TOKEN_LIFETIME, **kwargs)


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker) -> Iterator[World]:
    """Built once for the module in a transaction rolled back at its end (each test is a savepoint)."""
    with django_db_blocker.unblock(), transaction.atomic():
        tokens.clear_cache()
        project1, project2 = ProjectFactory(name="Isolation one"), ProjectFactory(name="Isolation two")
        w = World({1: project1, 2: project2})
        app1 = ClientApplicationFactory(project=project1)
        policy = AccessPolicyFactory(project=project1, resources=demo_style_policy())
        alice = MembershipFactory(project=project1, profile_type="Patient", profile_id="Patient-a",
                                  access_policy=policy)
        MembershipFactory(project=project1, profile_type="Patient", profile_id="Patient-b", access_policy=policy)
        doctor = MembershipFactory(project=project1, profile_type="Practitioner", profile_id="Practitioner-a")
        _populate(w)
        w.tokens["patient_policy"] = world_mint(client=app1, membership=alice, scope="openid")
        w.tokens["patient_scope"] = world_mint(client=app1, membership=alice, scope="openid patient/*.cruds")
        w.tokens["launch_scope"] = world_mint(client=app1, membership=doctor, scope="openid launch patient/*.cruds")
        Login.objects.filter(membership=doctor).update(launch_patient=A)
        w.tokens["client"] = world_mint(client=app1, scope="system/*.cruds")
        for rtype in TYPES:
            one_type = AccessPolicyFactory(project=project1, resources=[{"resourceType": rtype}])
            member = MembershipFactory(project=project1, profile_type="Practitioner", access_policy=one_type)
            w.practitioner_tokens[rtype] = world_mint(client=app1, membership=member, scope="openid")
        # Project 2: a client, and a twin of patient A (same profile id) under the same kind of policy.
        app2 = ClientApplicationFactory(project=project2)
        twin = MembershipFactory(project=project2, profile_type="Patient", profile_id="Patient-a",
                                 access_policy=AccessPolicyFactory(project=project2, resources=demo_style_policy()))
        w.tokens["project2_client"] = world_mint(client=app2, scope="system/*.cruds")
        w.tokens["project2_patient"] = world_mint(client=app2, membership=twin, scope="openid")
        # PostgreSQL: check the deferred foreign keys of the world now, in the outer transaction;
        # left pending, every test's teardown would check them all again (inside its savepoint).
        connection.check_constraints()
        yield w
        transaction.set_rollback(True)
    tokens.clear_cache()


# --- what each token may do and see --------------------------------------------------------------

def may(kind: str, token_type: str, rtype: str, interaction: str) -> bool:
    if kind in ("patient_policy", "patient_scope"):
        return rtype not in NON_COMPARTMENT or (rtype == "Organization" and interaction in READS)
    if kind == "practitioner":
        return rtype == token_type
    return True


def sees(kind: str, token_type: str, item: Item, version: int = -1) -> bool:
    """Whether a project-1 token may read ``item`` (at ``version``)."""
    if item.project != 1 or not may(kind, token_type, item.rtype, "read"):
        return False
    if kind in PATIENT_KINDS:
        if item.rtype in NON_COMPARTMENT:
            return kind == "patient_policy"  # granted by the policy; a patient/ scope confines to the compartment
        return item.versions[version][1] == "a"
    return True


def _entries(response: Any, mode: str) -> list[dict[str, Any]]:
    return [e for e in response.json().get("entry", []) if e["search"]["mode"] == mode]


def _keys(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["resource"]["resourceType"], e["resource"]["id"]) for e in entries]


def _assert_project_1(resource: dict[str, Any]) -> None:
    assert resource["meta"]["tag"] == [{"system": TAG, "code": "project-1"}], resource


def _snapshot(rtype: str) -> dict[tuple[Any, str], tuple[Any, ...]]:
    """Every stored resource of the type (both projects): version, content, deleted, version rows."""
    rows = Resource.objects.filter(resource_type=rtype).annotate(stored_versions=Count("versions"))
    return {(r.project_id, r.resource_id): (r.version_id, r.content, r.deleted, r.stored_versions) for r in rows}


def _assert_unchanged_except(before: dict, after: dict, changed: set[tuple[Any, str]]) -> None:
    for key, state in before.items():
        if key not in changed:
            assert after[key] == state, f"{key} changed: {state[:1]} -> {after[key][:1]}"
    assert set(after) == set(before), set(after) ^ set(before)


# --- the matrix ----------------------------------------------------------------------------------

ROUTES = ("read", "vread", "history", "update", "patch", "delete", "create")
GENERIC_SEARCHES = ("(none)", "_id", "_lastUpdated", "_compartment")
def _revincludes() -> list[tuple[str, str]]:
    """``(searched type, "Source:param")`` for every reference parameter of every type and every
    type its values in the world refer to (both sides' resources name both patients and more)."""
    cases = set()
    for source in TYPES:
        for name, param in SEARCH_PARAMETERS[source].items():
            if param.type != "reference":
                continue
            for side in ("a", "b"):
                for reference in param_values(param, build(source, side)):
                    target = reference.partition("/")[0]
                    if target in TYPES and param.target in (None, target):
                        cases.add((target, f"revinclude:{source}:{name}"))
    return sorted(cases)


CASES = [
    *((t, route) for t in TYPES for route in ROUTES),
    *((t, f"search:{p}") for t in TYPES for p in (*GENERIC_SEARCHES, *SEARCH_PARAMETERS[t])),
    *((t, f"include:{p}") for t in TYPES for p, param in SEARCH_PARAMETERS[t].items() if param.type == "reference"),
    *_revincludes(),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("rtype", "route"), CASES)
def test_isolation(client, world, rtype, route, kind):
    api = Api(client, world.token(kind, rtype))
    name, _, param = route.partition(":")
    check = {"read": _check_read, "vread": _check_vread, "history": _check_history, "update": _check_update,
             "patch": _check_patch, "delete": _check_delete, "create": _check_create, "search": _check_search,
             "include": _check_include, "revinclude": _check_revinclude}[name]
    check(api, world, kind, rtype, param)


def _targets(world: World, rtype: str) -> list[Item]:
    """Project 1's resources of the type, then project 2's own (its twins share project 1's ids)."""
    return [*world.of(1, rtype), world.items[(2, rtype, f"{rtype}-p2")]]


def _check_read(api: Api, world: World, kind: str, rtype: str, _param: str) -> None:
    for item in _targets(world, rtype):
        response = api.get(f"/{rtype}/{item.rid}")
        if not may(kind, rtype, rtype, "read"):
            assert_outcome(response, 403, "forbidden")
        elif sees(kind, rtype, item):
            assert response.status_code == 200, (item.rid, response.content)
            assert response.json() == item.content
        else:
            assert_outcome(response, 404, "not-found")


def _check_vread(api: Api, world: World, kind: str, rtype: str, _param: str) -> None:
    for item in _targets(world, rtype):
        for number, (content, _owner) in enumerate(item.versions):
            response = api.get(f"/{rtype}/{item.rid}/_history/{number + 1}")
            if not may(kind, rtype, rtype, "vread"):
                assert_outcome(response, 403, "forbidden")
            elif sees(kind, rtype, item) and sees(kind, rtype, item, number):
                assert response.status_code == 200, (item.rid, number + 1, response.content)
                assert response.json() == content
            else:
                assert_outcome(response, 404, "not-found")


def _check_history(api: Api, world: World, kind: str, rtype: str, _param: str) -> None:
    for item in _targets(world, rtype):
        response = api.get(f"/{rtype}/{item.rid}/_history")
        if not may(kind, rtype, rtype, "history"):
            assert_outcome(response, 403, "forbidden")
        elif sees(kind, rtype, item):
            assert response.status_code == 200, (item.rid, response.content)
            expected = [c for n, (c, _o) in enumerate(item.versions) if sees(kind, rtype, item, n)][::-1]
            body = response.json()
            assert [e["resource"] for e in body["entry"]] == expected
            assert body["total"] == len(expected)
        else:
            assert_outcome(response, 404, "not-found")


def _write_body(item: Item) -> dict[str, Any]:
    """The resource, taken over by patient A where it names patient B (the strongest attempt)."""
    return _swap(item.content, B, A) if item.rtype != "Patient" else {**item.content, "gender": "other"}


def _put(api: Api, item: Item, body: dict[str, Any]) -> Any:
    return api.put(f"/{item.rtype}/{item.rid}", body)


def _patch(api: Api, item: Item, body: dict[str, Any]) -> Any:
    """The same change as a JSON Patch (RFC 6902) of the stored content."""
    return api.patch(f"/{item.rtype}/{item.rid}", jsonpatch.make_patch(item.content, body).patch)


def _check_patch(api: Api, world: World, kind: str, rtype: str, param: str) -> None:
    _check_update(api, world, kind, rtype, param, send=_patch)


def _check_update(api: Api, world: World, kind: str, rtype: str, _param: str, send: Any = _put) -> None:
    p1 = world.projects[1].pk
    for item in _targets(world, rtype):
        if kind in PATIENT_KINDS and rtype not in (*NON_COMPARTMENT, "Patient") and sees(kind, rtype, item):
            # Giving A's resource to B would write into B's compartment: 403, nothing stored.
            before = _snapshot(rtype)
            assert_outcome(send(api, item, _swap(item.content, A, B)), 403, "forbidden")
            assert _snapshot(rtype) == before
        before = _snapshot(rtype)
        response = send(api, item, _write_body(item))
        changed: set[tuple[Any, str]] = set()
        if not may(kind, rtype, rtype, "update"):
            assert_outcome(response, 403, "forbidden")
        elif sees(kind, rtype, item):
            assert response.status_code == 200, (item.rid, response.content)
            changed = {(p1, item.rid)}
            assert before[(p1, item.rid)][0] + 1 == _snapshot(rtype)[(p1, item.rid)][0]
        else:
            assert_outcome(response, 404, "not-found")
        _assert_unchanged_except(before, _snapshot(rtype), changed)


def _check_delete(api: Api, world: World, kind: str, rtype: str, _param: str) -> None:
    p1 = world.projects[1].pk
    for item in _targets(world, rtype):
        before = _snapshot(rtype)
        response = api.delete(f"/{rtype}/{item.rid}")
        changed: set[tuple[Any, str]] = set()
        if not may(kind, rtype, rtype, "delete"):
            assert_outcome(response, 403, "forbidden")
        elif sees(kind, rtype, item):
            assert response.status_code == 200, (item.rid, response.content)
            changed = {(p1, item.rid)}
            assert _snapshot(rtype)[(p1, item.rid)][2] is True
        else:
            assert_outcome(response, 404, "not-found")
        _assert_unchanged_except(before, _snapshot(rtype), changed)


def _check_create(api: Api, world: World, kind: str, rtype: str, _param: str) -> None:
    """B's resource is never created by a patient-A token; A's is, where the policy allows creating."""
    for side in ("b", "a"):
        body = {k: v for k, v in build(rtype, side).items() if k != "meta"}
        before = _snapshot(rtype)
        response = api.post(f"/{rtype}", body)
        if kind in PATIENT_KINDS:
            # New compartment resources of A only; never a Patient (a new id), never outside the compartment.
            allowed = side == "a" and rtype not in (*NON_COMPARTMENT, "Patient")
        else:
            allowed = may(kind, rtype, rtype, "create")
        if allowed:
            assert response.status_code == 201, (side, response.content)
            row = Resource.objects.get(resource_type=rtype, resource_id=response.json()["id"])
            assert row.project_id == world.projects[1].pk
            assert set(_snapshot(rtype)) - set(before) == {(row.project_id, row.resource_id)}
        else:
            assert_outcome(response, 403, "forbidden")
            assert _snapshot(rtype) == before


# --- searches ------------------------------------------------------------------------------------

def _value_forms(ptype: str, target: str | None, value: str, bare: bool) -> list[tuple[str, Any]]:
    """Search values built from one stored index value, each with its predicate on index values."""
    if ptype == "string":
        return [(value, lambda v, s=value: v.startswith(normalise_string(s)))]
    if ptype == "date":
        day = value[:10]
        return [(day, lambda v, d=day: v[:10] == d)]
    if ptype == "reference":
        forms = [(value, lambda v, r=value: v == r)]
        if bare:  # an id alone: any type (or the parameter's only target)
            rid = value.split("/", 1)[1]
            forms.append((rid, (lambda v, r=f"{target}/{rid}": v == r) if target else
                          (lambda v, s=f"/{rid}": v.endswith(s))))
        return forms
    return [(value, lambda v, t=value: v == t)]


def _searches(world: World, rtype: str, param: str) -> list[tuple[dict[str, str], Any]]:
    """``(query, predicate on an item)`` pairs to search with, and which stored items match."""
    if param == "(none)":
        return [({}, lambda item: True)]
    if param == "_id":
        ids = [item.rid for item in world.of(1, rtype)] + [f"{rtype}-p2"]
        return [({"_id": f"{rtype}-b"}, lambda item: item.rid == f"{rtype}-b"),
                ({"_id": ",".join(ids)}, lambda item: item.rid in ids)]
    if param == "_lastUpdated":
        return [({"_lastUpdated": "ge2000-01-01"}, lambda item: True),
                ({"_lastUpdated": "lt2000-01-01"}, lambda item: False)]
    if param == "_compartment":
        def owned(patient: str) -> Any:
            return lambda item: item.rtype not in NON_COMPARTMENT and item.owner == patient
        return [({"_compartment": B}, owned("b")), ({"_compartment": A}, owned("a"))]
    # One search whose values (OR-ed, FHIR's comma) match A's resources and B's: patient B's first
    # and last values (e.g. "code" and "system|code"), references also by id alone; A's first value.
    spec = SEARCH_PARAMETERS[rtype][param]
    forms: dict[str, Any] = {}
    for item in world.of(1, rtype):
        if item.rid.endswith("-m"):
            continue  # the moved resource's values are A's
        values = index_values(rtype, item.content).get(param, [])
        b_side = item.rid.startswith(f"{rtype}-b")
        for value in dict.fromkeys(values[:1] + values[-1:] if b_side else values[:1]):
            forms.update(_value_forms(spec.type, spec.target, value, bare=b_side))
    predicates = list(forms.values())
    return [({param: ",".join(forms)}, lambda item: any(
        p(v) for v in index_values(rtype, item.content).get(param, []) for p in predicates))]


def _check_search(api: Api, world: World, kind: str, rtype: str, param: str) -> None:
    searches = _searches(world, rtype, param)
    assert searches, f"no stored {rtype} has a value for {param}"
    for query, predicate in searches:
        response = api.get(f"/{rtype}", {**query, "_count": "100"})
        if not may(kind, rtype, rtype, "search"):
            assert_outcome(response, 403, "forbidden")
            continue
        assert response.status_code == 200, (query, response.content)
        matches = _entries(response, "match")
        for entry in matches:
            _assert_project_1(entry["resource"])
        expected = sorted(item.rid for item in world.of(1, rtype) if sees(kind, rtype, item) and predicate(item))
        assert sorted(e["resource"]["id"] for e in matches) == expected, query
        assert response.json()["total"] == len(expected), query


def _searched_with(api: Api, world: World, kind: str, rtype: str, params: dict[str, str]) -> tuple[Any, list[Item]]:
    """The search's response and the matches it must have (none when it must be a 403)."""
    response = api.get(f"/{rtype}", {**params, "_count": "100"})
    if not may(kind, rtype, rtype, "search"):
        assert_outcome(response, 403, "forbidden")
        return response, []
    assert response.status_code == 200, response.content
    matched = [item for item in world.of(1, rtype) if sees(kind, rtype, item)]
    assert sorted(_keys(_entries(response, "match"))) == sorted((rtype, item.rid) for item in matched)
    assert response.json()["total"] == len(matched)
    return response, matched


def _assert_included(response: Any, expected: set[tuple[str, str]]) -> None:
    includes = _entries(response, "include")
    for entry in includes:
        _assert_project_1(entry["resource"])
    assert sorted(_keys(includes)) == sorted(expected)


def _check_include(api: Api, world: World, kind: str, rtype: str, param: str) -> None:
    response, matched = _searched_with(api, world, kind, rtype, {"_include": f"{rtype}:{param}"})
    if response.status_code == 403:
        return
    spec = SEARCH_PARAMETERS[rtype][param]
    # What the matches refer to through the parameter, found in project 1 (an id only in
    # project 2 is found nowhere), readable by the token, and not already a match.
    matched_keys = {(rtype, item.rid) for item in matched}
    expected: set[tuple[str, str]] = set()
    for item in matched:
        for reference in param_values(spec, item.content):
            target_type, _, target_id = reference.partition("/")
            target = world.items.get((1, target_type, target_id))
            if target is not None and (target_type, target_id) not in matched_keys and sees(kind, rtype, target):
                expected.add((target_type, target_id))
    _assert_included(response, expected)


def _check_revinclude(api: Api, world: World, kind: str, rtype: str, param: str) -> None:
    """What refers to the matches through ``Source:param``: in project 1, readable by the token."""
    source, _, name = param.partition(":")
    response, matched = _searched_with(api, world, kind, rtype, {"_revinclude": f"{source}:{name}"})
    if response.status_code == 403:
        return
    targets = {f"{rtype}/{item.rid}" for item in matched}
    spec = SEARCH_PARAMETERS[source][name]
    _assert_included(response, {
        (source, item.rid) for item in world.of(1, source)
        if sees(kind, rtype, item) and targets & set(param_values(spec, item.content))
        and (source, item.rid) not in {(rtype, m.rid) for m in matched}})


# --- around the matrix ---------------------------------------------------------------------------

def test_the_matrix_covers_every_type_and_parameter(world):
    """Every supported type is here, and patient B's resources give every parameter a value
    (A's too), so that "search with every parameter" stays true when parameters are added."""
    assert set(SEARCH_PARAMETERS) == set(TYPES)
    for rtype in TYPES:
        for side in ("a", "b"):
            items = [i for i in world.of(1, rtype) if i.rid.startswith(f"{rtype}-{side}")]
            covered = {name for item in items for name in index_values(rtype, item.content)}
            assert covered >= set(SEARCH_PARAMETERS[rtype]), (rtype, side, set(SEARCH_PARAMETERS[rtype]) - covered)


def test_the_expectations_have_a_positive_side(world):
    """The rules the matrix checks against: A's resources are served wherever the type is readable
    (but for the documented non-compartment cases), B's only to the client and the practitioner,
    project 2's never. So the matrix asserts 200s and found resources, not only 404s."""
    for kind in KINDS:
        for rtype in TYPES:
            a, b, p2 = (world.items[key] for key in ((1, rtype, f"{rtype}-a"), (1, rtype, f"{rtype}-b"),
                                                     (2, rtype, f"{rtype}-a")))
            readable = may(kind, rtype, rtype, "read")
            confined = kind in PATIENT_KINDS and rtype in NON_COMPARTMENT and kind != "patient_policy"
            assert sees(kind, rtype, a) is (readable and not confined), (kind, rtype)
            assert sees(kind, rtype, b) is (readable and not confined
                                            and (kind not in PATIENT_KINDS or rtype == "Organization"))
            assert not sees(kind, rtype, p2)
    assert may("patient_policy", "Organization", "Organization", "read")
    assert not may("patient_policy", "Practitioner", "Practitioner", "read")


def test_the_traps_are_armed(client, world):
    """Project 2's resources exist under project 1's ids, and are served to project 2's tokens.

    Without this, "never seen from project 1" could pass because the data was missing.
    """
    api = Api(client, world.tokens["project2_client"])
    for rtype in TYPES:
        for suffix in ("a", "b", "p2"):
            body = api.get(f"/{rtype}/{rtype}-{suffix}").json()
            assert body["meta"]["tag"] == [{"system": TAG, "code": "project-2"}], body
        assert api.get(f"/{rtype}").json()["total"] == 3
        if rtype not in NON_COMPARTMENT:
            assert world.items[(2, rtype, f"{rtype}-b")].content != world.items[(1, rtype, f"{rtype}-b")].content


@pytest.mark.parametrize("rtype", TYPES)
def test_project_2_patient_twin_never_sees_project_1(client, world, rtype):
    """Patient A's twin in project 2 (same profile id, same kind of policy) gets project 2's data only."""
    api = Api(client, world.tokens["project2_patient"])
    if rtype == "Practitioner":
        assert_outcome(api.get(f"/{rtype}/{rtype}-a"), 403, "forbidden")
        return
    expected = {"Patient": {"Patient-a"}, "Organization": {f"{rtype}-{s}" for s in ("a", "b", "p2")}}.get(
        rtype, {f"{rtype}-{s}" for s in ("a", "b", "p2")})
    bundle = api.get(f"/{rtype}", {"_count": "100"}).json()
    assert {e["resource"]["id"] for e in bundle["entry"]} == expected
    assert all(e["resource"]["meta"]["tag"][0]["code"] == "project-2" for e in bundle["entry"])
    assert bundle["total"] == len(expected)
    assert api.get(f"/{rtype}/{rtype}-a").json()["meta"]["tag"][0]["code"] == "project-2"
    if rtype not in NON_COMPARTMENT and rtype != "Patient":
        assert_outcome(api.get(f"/{rtype}/{rtype}-m"), 404, "not-found")  # exists in project 1 only


@pytest.mark.parametrize("rtype", TYPES)
def test_a_one_type_policy_forbids_every_other_type(client, world, rtype):
    """The practitioner whose policy grants ``rtype`` only: 403 on every other type (read), and on
    every interaction with the next type in the list; nothing changes."""
    api = Api(client, world.practitioner_tokens[rtype])
    before = {other: _snapshot(other) for other in TYPES}
    for other in TYPES:
        if other != rtype:
            assert_outcome(api.get(f"/{other}/{other}-a"), 403, "forbidden")
    other = TYPES[(TYPES.index(rtype) + 1) % len(TYPES)]
    item = world.items[(1, other, f"{other}-a")]
    for response in (api.get(f"/{other}"), api.get(f"/{other}/{other}-a/_history"),
                     api.get(f"/{other}/{other}-a/_history/1"), api.put(f"/{other}/{other}-a", item.content),
                     api.delete(f"/{other}/{other}-a"), api.post(f"/{other}", build(other, "a"))):
        assert_outcome(response, 403, "forbidden")
    assert {other: _snapshot(other) for other in TYPES} == before


# --- the types served from the R4 data: the Patient compartment decides ---------------------------

@pytest.mark.parametrize("rtype", sorted(NEW_TYPES))
def test_patient_scope_sees_only_its_own_compartment_of_new_types(client, app1, project1, alice, bob, rtype):
    """``patient/*`` reaches the new types through the R4 Patient compartment: A's own resources,
    never B's (404, not in searches, not writable); types outside the compartment not at all."""
    mine = seed(project1, new_resource(rtype, alice.profile, "a"))["id"]
    theirs = seed(project1, new_resource(rtype, bob.profile, "b"))["id"]
    alice.access_policy = None  # the scope alone confines the token
    alice.save()
    api = Api(client, mint(client=app1, membership=alice, scope="openid patient/*.cruds"))
    in_compartment = NEW_TYPES[rtype][1] is not None
    found = {e["resource"]["id"] for e in api.get(f"/{rtype}").json().get("entry", [])}
    assert found == ({mine} if in_compartment else set())
    assert_outcome(api.get(f"/{rtype}/{theirs}"), 404, "not-found")
    assert_outcome(api.delete(f"/{rtype}/{theirs}"), 404, "not-found")
    replacement = {**new_resource(rtype, alice.profile, "b"), "id": theirs}
    assert_outcome(api.put(f"/{rtype}/{theirs}", replacement), 404, "not-found")
    assert not api.get(f"/{rtype}", {"_id": theirs}).json()["entry"]
    if in_compartment:
        assert api.get(f"/{rtype}/{mine}").status_code == 200
        # A new resource must stay in the token's compartment.
        assert_outcome(api.post(f"/{rtype}", new_resource(rtype, bob.profile, "c")), 403, "forbidden")
        assert api.post(f"/{rtype}", new_resource(rtype, alice.profile, "d")).status_code == 201
    else:
        assert_outcome(api.get(f"/{rtype}/{mine}"), 404, "not-found")
