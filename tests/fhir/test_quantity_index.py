"""Observation write cost: one index row per coded quantity, and none for the R4 ``combo-*``
parameters (searched on the rows of the parameters they unite). Every form of a quantity search
keeps its answer, combo searches answer what their parts answer, and rows in the earlier format
(``|code`` beside ``system|code``, combo rows) keep answering until ``manage.py
medplum_fhir_reindex`` rewrites them."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from fhir_api.models import SearchIndex
from fhir_api.search_params import SEARCH_PARAMETERS
from tests.fhir.conftest import seed

pytestmark = pytest.mark.django_db

UCUM = "http://unitsofmeasure.org"


def _obs(quantity: dict) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "weight"}, "valueQuantity": quantity}


@pytest.fixture
def weights(project1) -> dict[str, str]:
    """Quantities with every combination of system, code and unit."""
    made = {
        "ucum": {"value": 70, "system": UCUM, "code": "kg", "unit": "kg"},
        "ucum-unit": {"value": 70.0, "system": UCUM, "code": "kg", "unit": "kilogram"},
        "no-system": {"value": 70, "code": "kg"},
        "unit-only": {"value": 70, "unit": "kg"},
        "other-system": {"value": 70, "system": "urn:other", "code": "kg"},
        "bare": {"value": 70},
        "pounds": {"value": 154, "system": UCUM, "code": "[lb_av]", "unit": "lb"},
    }
    return {name: seed(project1, _obs(q))["id"] for name, q in made.items()}


def _found(full_api, value: str, weights: dict[str, str]) -> set[str]:
    response = full_api.get("/Observation", {"value-quantity": value, "_count": "100"})
    assert response.status_code == 200, response.content
    names = {v: k for k, v in weights.items()}
    return {names[e["resource"]["id"]] for e in response.json().get("entry", [])}


@pytest.mark.parametrize(("value", "expected"), [
    ("70", {"ucum", "ucum-unit", "no-system", "unit-only", "other-system", "bare"}),
    ("70||kg", {"ucum", "ucum-unit", "no-system", "unit-only", "other-system"}),
    ("70|http://unitsofmeasure.org|kg", {"ucum", "ucum-unit"}),
    ("70|urn:other|kg", {"other-system"}),
    ("70||kilogram", {"ucum-unit"}),
    ("70|http://unitsofmeasure.org|kilogram", set()),  # a unit is not a code of the system
    ("gt100||lb", {"pounds"}), ("gt100||[lb_av]", {"pounds"}), ("154||b", set()), ("70||g", set()),
    ("le70||kg", {"ucum", "ucum-unit", "no-system", "unit-only", "other-system"}), ("ne70||kg", set()),
    ("7e1|http://unitsofmeasure.org|kg", {"ucum", "ucum-unit"}), ("70.4||kg", set()),
    ("ap75||kg", {"ucum", "ucum-unit", "no-system", "unit-only", "other-system"}),
])
def test_every_form_of_a_quantity_search(full_api, weights, value, expected):
    assert _found(full_api, value, weights) == expected


def test_one_row_per_coded_quantity(weights):
    rows = dict.fromkeys(weights)
    for name, resource_id in weights.items():
        rows[name] = sorted(SearchIndex.objects.filter(resource__resource_id=resource_id, name="value-quantity")
                            .values_list("value", flat=True))
    assert rows == {"ucum": [f"{UCUM}|kg"], "ucum-unit": [f"{UCUM}|kg", "|kilogram"], "no-system": ["|kg"],
                    "unit-only": ["|kg"], "other-system": ["urn:other|kg"], "bare": ["|"],
                    "pounds": [f"{UCUM}|[lb_av]", "|lb"]}


def _add_earlier_format_rows() -> int:
    """The rows the earlier format also wrote: ``|code`` beside each ``system|code`` (composites
    too), and a copy of each row of the parameters a ``combo-*`` unites under the combo's name."""
    unions = {part: name for name, p in SEARCH_PARAMETERS["Observation"].items() for part in p.union_of}
    extra = []
    for row in SearchIndex.objects.filter(resource_type="Observation"):
        values = [row.value]
        head, dollar, units = row.value.rpartition("$")
        system, bar, code = units.partition("|")
        if "quantity" in row.name and row.number is not None and system and bar:
            values.append(f"{head}{dollar}|{code}")
            extra.append(SearchIndex(resource_id=row.resource_id, project_id=row.project_id,
                                     resource_type=row.resource_type, name=row.name, value=values[1],
                                     number=row.number))
        extra += [SearchIndex(resource_id=row.resource_id, project_id=row.project_id, resource_type=row.resource_type,
                              name=unions[row.name], value=value, number=row.number)
                  for value in values if row.name in unions]
    SearchIndex.objects.bulk_create(extra)
    return len(extra)


def test_combo_parameters_answer_what_their_parts_answer_without_rows_of_their_own(full_api, weights, project1):
    seed(project1, {"resourceType": "Observation", "status": "final", "code": {"coding": [{"code": "bp"}]},
                    "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                                   "valueQuantity": {"value": 120, "system": UCUM, "code": "mm[Hg]"}},
                                  {"code": {"coding": [{"code": "smoke"}]},
                                   "valueCodeableConcept": {"coding": [{"system": "urn:s", "code": "never"}]},
                                   "dataAbsentReason": {"coding": [{"code": "asked"}]}}]})
    seed(project1, {"resourceType": "Observation", "status": "final", "code": {"coding": [{"code": "smoke"}]},
                    "valueCodeableConcept": {"coding": [{"system": "urn:s", "code": "never"}]}})
    params = SEARCH_PARAMETERS["Observation"]
    probes = {"combo-code": ["bp", "http://loinc.org|8480-6", "smoke", "nothing"],
              "combo-value-quantity": ["70||kg", "gt100", f"120|{UCUM}|mm[Hg]", "lt1"],
              "combo-code-value-quantity": ["8480-6$120", "weight$70", "8480-6$lt100"],
              "combo-value-concept": ["urn:s|never", "daily"], "combo-code-value-concept": ["smoke$never"],
              "combo-data-absent-reason": ["asked", "unknown"]}
    assert set(probes) == {name for name, p in params.items() if p.union_of}
    for name, values in probes.items():
        assert not SearchIndex.objects.filter(name=name).exists()
        for value in values:
            combo = {e["resource"]["id"] for e in full_api.get("/Observation", {name: value}).json().get("entry", [])}
            parts = {e["resource"]["id"] for part in params[name].union_of
                     for e in full_api.get("/Observation", {part: value}).json().get("entry", [])}
            assert combo == parts, (name, value)
    hits = {name: bool(full_api.get("/Observation", {name: values[0]}).json().get("entry")) for name, values in
            probes.items()}
    assert all(hits.values()), hits  # every probe's first value finds something


def test_rows_in_the_earlier_format_answer_the_same_and_the_command_rewrites_them(full_api, weights, project1):
    bp = seed(project1, {"resourceType": "Observation", "status": "final", "code": {"text": "bp"}, "component": [
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "valueQuantity": {"value": 120, "system": UCUM, "code": "mm[Hg]"}}]})["id"]
    searches = [("value-quantity", v) for v in ("70||kg", f"70|{UCUM}|kg", "gt100||[lb_av]", "70", "70||kilogram")]
    searches += [("component-code-value-quantity", v) for v in ("8480-6$120||mm[Hg]", f"8480-6$120|{UCUM}|mm[Hg]",
                                                               "http://loinc.org|8480-6$gt100||mm[Hg]")]
    searches += [("combo-value-quantity", "gt100||[lb_av]"), ("combo-code", "8480-6"),
                 ("combo-value-quantity", "70||kg"), ("combo-code-value-quantity", "8480-6$120||mm[Hg]")]

    def answers() -> list[set[str]]:
        return [{e["resource"]["id"] for e in full_api.get("/Observation", {k: v}).json().get("entry", [])}
                for k, v in searches]

    before, rows = answers(), SearchIndex.objects.count()
    assert all(before) and bp in before[-1] and bp in before[-3]
    added = _add_earlier_format_rows()
    assert added >= 6
    assert answers() == before  # an existing database answers correctly without re-indexing

    out = StringIO()
    call_command("medplum_fhir_reindex", "--batch", "3", stdout=out)
    # Every Observation had combo rows (combo-code at least).
    assert out.getvalue().split() == ["checked:", str(len(weights) + 1), "reindexed:", str(len(weights) + 1)]
    assert SearchIndex.objects.count() == rows and answers() == before
    out = StringIO()
    call_command("medplum_fhir_reindex", "--type", "Observation", stdout=out)  # again: nothing to do
    assert out.getvalue().split() == ["checked:", str(len(weights) + 1), "reindexed:", "0"]


def test_the_command_reads_a_batch_in_a_fixed_number_of_queries(weights, django_assert_num_queries):
    """Per batch, whatever the number of resources in it: its keys, the locked rows, their stored index
    rows, the delete and the insert (within a savepoint and its release, inside the test's transaction);
    the next batch's key query ends the run. It read each resource's index rows with a query of its own."""
    assert _add_earlier_format_rows() >= 6
    with django_assert_num_queries(8 if connection.features.uses_savepoints else 6):
        call_command("medplum_fhir_reindex", "--batch", str(len(weights) + 10), stdout=StringIO())


def test_the_command_refuses_bad_arguments():
    with pytest.raises(CommandError, match="Unknown resource type"):
        call_command("medplum_fhir_reindex", "--type", "Spaceship")
    with pytest.raises(CommandError, match="positive"):
        call_command("medplum_fhir_reindex", "--batch", "0")

