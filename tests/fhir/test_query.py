"""Index extraction and the two forms of a condition (database filter, Python check)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection

from fhir_api.models import Resource
from fhir_api.query import Target, filters_match, filters_where
from fhir_api.search_params import compartment, date_range, index_values, reference_value
from tests.fhir.conftest import observation, seed

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("value", "start", "end"), [
    ("2020", "2020-01-01T00:00:00", "2021-01-01T00:00:00"),
    ("2020-12", "2020-12-01T00:00:00", "2021-01-01T00:00:00"),
    ("2020-02-28", "2020-02-28T00:00:00", "2020-02-29T00:00:00"),
    ("2020-02-28T23:30:00-01:00", "2020-02-29T00:30:00", "2020-02-29T00:30:01"),
    ("2020-02-28T10:00Z", "2020-02-28T10:00:00", "2020-02-28T10:01:00"),
    ("2020-02-28T10:00:00.123Z", "2020-02-28T10:00:00", "2020-02-28T10:00:01"),
])
def test_date_range(value, start, end):
    low, high = date_range(value)
    assert low.strftime("%Y-%m-%dT%H:%M:%S") == start and high.strftime("%Y-%m-%dT%H:%M:%S") == end


@pytest.mark.parametrize("value", ["", "20", "2020-13", "2020-02-30", "yesterday", "2020-01-01T25:00:00Z", 7,
                                   "0001-01-01T00:00:00+01:00"])
def test_invalid_dates(value):
    assert date_range(value) is None


@pytest.mark.parametrize("value", ["9999", "9999-12", "9999-12-31", "9999-12-31T23:59Z", "9999-12-31T23:59:59Z",
                                   "0001-01-01T00:00:00-01:00"])
def test_the_ends_of_time_do_not_overflow(value):
    low, high = date_range(value)
    assert low < high <= datetime.max.replace(tzinfo=UTC)


def test_reference_values():
    assert reference_value("Patient/1") == "Patient/1"
    assert reference_value("Patient/1/_history/2") == "Patient/1"
    assert reference_value("http://127.0.0.1:8000/fhir/R4/Patient/1") == "Patient/1"
    assert reference_value("https://elsewhere.example/fhir/Patient/1") is None
    assert reference_value("#contained") is None
    assert reference_value("Patient/has space") is None


def test_compartment_needs_exactly_one_patient():
    assert compartment("Patient", "x", {}) == "Patient/x"
    assert compartment("Observation", "o", index_values("Observation", observation("Patient/a"))) == "Patient/a"
    group = {**observation("Group/g")}
    assert compartment("Observation", "o", index_values("Observation", group)) == ""
    assert compartment("Practitioner", "d", {}) == ""


def test_long_values_are_not_indexed():
    long_code = "x" * 2000
    index = index_values("Observation", observation("Patient/a", code=long_code))
    assert "code" not in index  # neither the code nor system|code: skipped, never truncated


@pytest.mark.parametrize("criteria", [
    (("unknown", "1"),),
    (("subject:missing", "true"),),
    (("date", "not-a-date"),),
    (("birthdate", "2020"),),  # a Patient parameter on an Observation
])
def test_criteria_this_server_cannot_evaluate_match_nothing(project1, criteria):
    seed(project1, observation("Patient/a"))
    rows = Resource.objects.filter(project=project1, resource_type="Observation")
    assert not rows.filter(filters_where(connection, project1.pk, "Observation", [criteria]).expression()).exists()
    index = index_values("Observation", observation("Patient/a"))
    assert not filters_match("Observation", [criteria], Target("o", "Patient/a", datetime.now(UTC), index))


def test_filters_are_or_of_and(project1):
    a = seed(project1, observation("Patient/a", code="1"))["id"]
    b = seed(project1, observation("Patient/b", code="2"))["id"]
    seed(project1, observation("Patient/c", code="1"))
    filters = [(("subject", "Patient/a"), ("code", "1")), (("_compartment", "Patient/b"),)]
    where = filters_where(connection, project1.pk, "Observation", filters)
    found = set(Resource.objects.filter(project=project1, resource_type="Observation")
                .filter(where.expression()).values_list("resource_id", flat=True))
    assert found == {a, b}
    for content in Resource.objects.filter(project=project1, resource_type="Observation"):
        index = index_values("Observation", content.content)
        target = Target(content.resource_id, content.patient, content.last_updated, index)
        assert filters_match("Observation", filters, target) == (content.resource_id in found)


def test_filters_never_cross_projects(project1, project2):
    seed(project2, observation("Patient/a"))
    q = filters_where(connection, project1.pk, "Observation", [(("subject", "Patient/a"),)]).expression()
    assert not Resource.objects.filter(project=project1, resource_type="Observation").filter(q).exists()
    # The index lookup itself is scoped: project 2's index rows do not satisfy project 1's query.
    assert not Resource.objects.filter(resource_type="Observation").filter(q).exists()
