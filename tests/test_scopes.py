"""SMART App Launch 2.2 §3 scope parsing, table-driven: malformed scopes are never over-granted."""

from __future__ import annotations

import pytest

from medplum_auth.scopes import ResourceScope, describe, is_supported, parse_resource_scope, split, wants_refresh_token

pytestmark = pytest.mark.spec("SMART App Launch 2.2 §3 scopes")


@pytest.mark.parametrize(("scope", "expected"), [
    # v1: read → rs, write → cud, * → cruds
    ("patient/Observation.read", ResourceScope("patient", "Observation", "rs", (), 1)),
    ("user/Observation.write", ResourceScope("user", "Observation", "cud", (), 1)),
    ("system/*.*", ResourceScope("system", "*", "cruds", (), 1)),
    ("user/*.read", ResourceScope("user", "*", "rs", (), 1)),
    # v2: letters in order, at least one
    ("patient/Observation.rs", ResourceScope("patient", "Observation", "rs", (), 2)),
    ("patient/Observation.c", ResourceScope("patient", "Observation", "c", (), 2)),
    ("user/*.cruds", ResourceScope("user", "*", "cruds", (), 2)),
    ("system/Patient.s", ResourceScope("system", "Patient", "s", (), 2)),
    ("patient/Condition.cud", ResourceScope("patient", "Condition", "cud", (), 2)),
    # v2 constraints
    ("patient/Observation.rs?category=laboratory",
     ResourceScope("patient", "Observation", "rs", (("category", "laboratory"),), 2)),
    ("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs",
     ResourceScope("patient", "Observation", "rs",
                   (("category", "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"),), 2)),
    ("user/Observation.rs?status=final&category=laboratory",
     ResourceScope("user", "Observation", "rs", (("status", "final"), ("category", "laboratory")), 2)),
])
def test_well_formed_scopes(scope, expected):
    assert parse_resource_scope(scope) == expected
    assert is_supported(scope)


@pytest.mark.parametrize("scope", [
    "patient/Observation.sr",          # letters out of order
    "patient/Observation.rr",          # repeated letter
    "patient/Observation.",            # no permission
    "patient/Observation.x",           # unknown letter
    "patient/Observation.readwrite",   # not a v1 word
    "patient/observation.rs",          # type must be capitalised
    "practitioner/Observation.rs",     # unknown context
    "patient/*.*?x=1",                 # v1 permissions cannot carry constraints
    "patient/Observation.read?category=laboratory",
    "patient/Observation.rs?",         # empty constraint
    "patient/Observation.rs?category", # constraint without a value
    "patient/Observation.rs#frag",
    "patient/Observation.rs ",          # whitespace belongs to the separator, not the scope
    "patient/Observation.rs\n",
    "patient/Observation.rs?a=1?b=2",
    "Patient/Observation.rs",
    "patient/Observation",
    "patient/.rs",
    "",
])
def test_malformed_scopes_grant_nothing(scope):
    assert parse_resource_scope(scope) is None
    assert not is_supported(scope)


@pytest.mark.parametrize(("scope", "supported"), [
    ("openid", True), ("fhirUser", True), ("offline_access", True), ("launch", True), ("launch/patient", True),
    ("profile", True), ("email", True), ("online_access", True), ("admin", False), ("openid2", False),
])
def test_non_resource_scopes(scope, supported):
    assert is_supported(scope) is supported


def test_split_keeps_order_and_drops_duplicates():
    scopes = split(" openid  patient/Observation.rs openid\tfhirUser ")
    assert scopes == ["openid", "patient/Observation.rs", "fhirUser"]
    assert split(None) == []


def test_refresh_tokens_follow_offline_scopes():
    assert wants_refresh_token(["openid", "offline_access"])
    assert wants_refresh_token(["offline"])  # Medplum's legacy name
    assert not wants_refresh_token(["openid", "online_access"])


def test_consent_words():
    assert describe("patient/Observation.rs?category=laboratory") == (
        "Read, search Observation records for the selected patient where category = laboratory")
    assert describe("user/*.cruds") == "Create, read, update, delete, search all data you can access"
    assert describe("openid") == "Confirm your identity"
    assert describe("patient/Observation.sr") == "patient/Observation.sr"
