"""The search's SQL: a policy's filters stay in the query, conditions they already impose are not
repeated, and the page and its ``total`` come from one statement (bench/fhir_bench.py)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fhir_api.query import parse_condition
from fhir_api.repository import _imposed_conditions
from medplum_auth.access import Decision
from tests.fhir.conftest import Api, mint, observation, seed

pytestmark = pytest.mark.django_db


def _resource_queries(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if "fhir_api_resource" in q["sql"]]


def test_patient_search_keeps_the_policy_filter_once(client, app1, alice, bob):
    for _ in range(3):
        seed(alice.project, observation(alice.profile))
    seed(bob.project, observation(bob.profile))
    api = Api(client, mint(client=app1, membership=alice, scope="openid patient/*.rs"))
    with CaptureQueriesContext(connection) as captured:
        bundle = api.get("/Observation", {"subject": alice.profile}).json()
    assert bundle["total"] == 3 and len(bundle["entry"]) == 3
    [page] = _resource_queries(captured)  # the page and its total: one statement
    # The policy's subject filter and the scope's compartment filter are in the SQL; the
    # search's own subject=alice, the same condition, is not added a second time: one index
    # subquery, in the one scan that both counts the matches and chooses the page.
    assert page.count("EXISTS (") == 1 and page.count("COUNT(*) OVER ()") == 1 and alice.profile in page
    assert '"fhir_api_resource"."patient"' in page
    # Asking for Bob's data still goes through the policy: nothing.
    assert api.get("/Observation", {"subject": bob.profile}).json()["total"] == 0


def test_a_condition_is_left_out_only_if_every_alternative_imposes_it():
    subject = parse_condition("Observation", "subject", "Patient/a")
    one = Decision("filtered", filters=((("subject", "Patient/a"),),))
    both = Decision("filtered", filters=((("subject", "Patient/a"), ("status", "final")),
                                         (("subject", "Patient/a"),)))
    either = Decision("filtered", filters=((("subject", "Patient/a"),), (("subject", "Patient/b"),)))
    unusable = Decision("filtered", filters=((("subject", "Patient/a"),), (("no-such-param", "x"),)))
    assert subject in _imposed_conditions("Observation", one)
    assert subject in _imposed_conditions("Observation", both)
    assert subject not in _imposed_conditions("Observation", either)
    assert subject in _imposed_conditions("Observation", unusable)  # that alternative matches nothing
    assert not _imposed_conditions("Observation", Decision("allowed"))


def test_total_on_every_page_and_past_the_end(full_api, alice):
    for n in range(5):
        seed(alice.project, observation(alice.profile, code=f"c{n}"))
    totals = {}
    for offset in (0, 2, 4, 5, 9):
        with CaptureQueriesContext(connection) as captured:
            bundle = full_api.get("/Observation", {"_count": 2, "_offset": offset}).json()
        totals[offset] = (bundle["total"], len(bundle.get("entry", [])), len(_resource_queries(captured)))
    # Every page carries its total; past the end (no row to carry it), a COUNT of its own.
    assert totals == {0: (5, 2, 1), 2: (5, 2, 1), 4: (5, 1, 1), 5: (5, 0, 2), 9: (5, 0, 2)}
    assert full_api.get("/Observation", {"_summary": "count"}).json()["total"] == 5
