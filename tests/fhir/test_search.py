"""Search: every parameter of every type, value semantics, paging, sorting, and errors."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fhir_api.query import Target, condition_matches, parse_condition
from fhir_api.search_params import compartment, index_values
from tests.fhir.conftest import assert_outcome, legacy_parameters, observation, seed

pytestmark = pytest.mark.django_db
SEARCH_PARAMETERS = legacy_parameters()  # the matrix: the 14 types' parameters (tests/fhir/conftest.py)

P1, P2 = "Patient/p1", "Patient/p2"


def _person(resource_type: str, n: int, **extra: Any) -> dict[str, Any]:
    names = [("Match", "Mia"), ("Other", "Olaf")][n]
    return {"resourceType": resource_type, "identifier": [{"system": "urn:mrn", "value": f"M-{n}"}],
            "name": [{"family": names[0], "given": [names[1]], "prefix": ["Dr" if n == 0 else "Mx"],
                      "suffix": ["Jr" if n == 0 else "Sr"], "text": f"{names[1]} {names[0]}"}],
            "gender": ["female", "male"][n], "active": n == 0, **extra}


def _cc(code: str, system: str = "http://example.org/codes") -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _ref(reference: str) -> dict[str, str]:
    return {"reference": reference}


def _clinical(n: int) -> dict[str, Any]:
    """Elements shared by the clinical types: identifier, subject, encounter."""
    return {"identifier": [{"system": "urn:ids", "value": f"id-{n}"}], "subject": _ref([P1, P2][n]),
            "encounter": _ref(f"Encounter/e{n}")}


def samples(n: int) -> list[dict[str, Any]]:
    """Two different resources of every type (n = 0, 1), together giving every parameter a value."""
    day = ["2020-01-15", "2021-06-30"][n]
    status = ["final", "preliminary"][n]
    return [
        _person("Patient", n, birthDate=["1980-05-06", "1990-01-01"][n],
                managingOrganization=_ref(f"Organization/o{n}"), generalPractitioner=[_ref(f"Practitioner/d{n}")]),
        _person("Practitioner", n),
        _person("RelatedPerson", n, patient=_ref([P1, P2][n])),
        {"resourceType": "Organization", "identifier": [{"system": "urn:org", "value": f"o-{n}"}],
         "name": ["Alpha Clinic", "Beta Hospital"][n], "alias": [["AC"], ["BH"]][n], "active": n == 0,
         "type": [_cc(["prov", "dept"][n])]},
        {"resourceType": "Encounter", "identifier": [{"value": f"enc-{n}"}], "status": ["finished", "planned"][n],
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": ["AMB", "IMP"][n]},
         "type": [_cc(["checkup", "surgery"][n])], "subject": _ref([P1, P2][n]),
         "participant": [{"individual": _ref(f"Practitioner/d{n}")}], "serviceProvider": _ref(f"Organization/o{n}"),
         "period": {"start": f"{day}T09:00:00Z", "end": f"{day}T10:00:00Z"}},
        {"resourceType": "Observation", **_clinical(n), "status": status, "code": _cc(["8867-4", "9279-1"][n]),
         "category": [_cc(["vital-signs", "laboratory"][n])], "performer": [_ref(f"Practitioner/d{n}")],
         "effectiveDateTime": f"{day}T08:30:00+02:00"},
        {"resourceType": "Condition", **_clinical(n), "code": _cc(["38341003", "44054006"][n]),
         "category": [_cc(["problem-list-item", "encounter-diagnosis"][n])],
         "clinicalStatus": _cc(["active", "resolved"][n]), "verificationStatus": _cc(["confirmed", "refuted"][n]),
         "onsetDateTime": day, "recordedDate": day, "asserter": _ref(f"Practitioner/d{n}")},
        {"resourceType": "AllergyIntolerance", "identifier": [{"value": f"al-{n}"}], "patient": _ref([P1, P2][n]),
         "encounter": _ref(f"Encounter/e{n}"), "code": _cc(["peanut", "penicillin"][n]),
         "category": [["food", "medication"][n]], "clinicalStatus": _cc(["active", "inactive"][n]),
         "verificationStatus": _cc(["confirmed", "unconfirmed"][n]), "recordedDate": day,
         "recorder": _ref(f"Practitioner/d{n}"), "asserter": _ref([P1, P2][n])},
        {"resourceType": "MedicationRequest", **_clinical(n), "status": ["active", "stopped"][n],
         "intent": ["order", "plan"][n], "category": [_cc(["outpatient", "inpatient"][n])],
         **({"medicationCodeableConcept": _cc("1049502")} if n == 0 else
            {"medicationReference": _ref("Medication/m1")}),
         "requester": _ref(f"Practitioner/d{n}"), "authoredOn": day},
        {"resourceType": "Immunization", "identifier": [{"value": f"imm-{n}"}], "patient": _ref([P1, P2][n]),
         "encounter": _ref(f"Encounter/e{n}"), "status": ["completed", "not-done"][n],
         "vaccineCode": _cc(["207", "208"][n]), "performer": [{"actor": _ref(f"Practitioner/d{n}")}],
         "occurrenceDateTime": day},
        {"resourceType": "Procedure", **_clinical(n), "status": ["completed", "in-progress"][n],
         "code": _cc(["80146002", "387713003"][n]), "category": _cc(["surgical", "diagnostic"][n]),
         "performer": [{"actor": _ref(f"Practitioner/d{n}")}], "performedDateTime": day},
        {"resourceType": "DiagnosticReport", **_clinical(n), "status": status, "code": _cc(["58410-2", "24323-8"][n]),
         "category": [_cc(["HM", "CH"][n])], "performer": [_ref(f"Organization/o{n}")],
         "effectiveDateTime": day},
        {"resourceType": "DocumentReference", "identifier": [{"value": f"doc-{n}"}],
         "status": ["current", "superseded"][n],
         "type": _cc(["34133-9", "11488-4"][n]), "category": [_cc(["clinical-note", "summary"][n])],
         "subject": _ref([P1, P2][n]), "author": [_ref(f"Practitioner/d{n}")], "date": f"{day}T12:00:00Z",
         "context": {"encounter": [_ref(f"Encounter/e{n}")]},
         "content": [{"attachment": {"contentType": "text/plain", "url": "https://example.org/doc"}}]},
        {"resourceType": "CarePlan", **_clinical(n), "status": ["active", "completed"][n],
         "intent": ["plan", "order"][n], "category": [_cc(["assess-plan", "careteam"][n])],
         "period": {"start": day}},
    ]


@pytest.fixture
def stored(project1):
    """Both samples of every type in project 1, by type: [(id, content), (id, content)]."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for n in (0, 1):
        for resource in samples(n):
            content = seed(project1, resource)
            out.setdefault(resource["resourceType"], []).append((content["id"], content))
    return out


def test_samples_give_every_parameter_a_value():
    for resource_type, params in SEARCH_PARAMETERS.items():
        covered: set[str] = set()
        for n in (0, 1):
            resource = next(r for r in samples(n) if r["resourceType"] == resource_type)
            covered |= set(index_values(resource_type, resource))
        assert covered >= set(params), (resource_type, set(params) - covered)


def _ids(response) -> set[str]:
    assert response.status_code == 200, response.content
    return {entry["resource"]["id"] for entry in response.json().get("entry", [])}


@pytest.mark.parametrize(("resource_type", "param"),
                         [(t, p) for t, params in SEARCH_PARAMETERS.items() for p in params])
def test_every_parameter_finds_exactly_what_the_python_check_says(full_api, stored, resource_type, param):
    """The database filter and the Python check of writes agree, and both single out one resource."""
    pairs = stored[resource_type]
    probes = {v for _id, content in pairs for v in index_values(resource_type, content).get(param, [])}
    assert probes
    sizes = []
    for value in probes:
        condition = parse_condition(resource_type, param, value)
        expected = set()
        for resource_id, content in pairs:
            index = index_values(resource_type, content)
            target = Target(resource_id, compartment(resource_type, resource_id, index), None, index)
            if condition_matches(condition, target):
                expected.add(resource_id)
        assert expected, (param, value)
        found = _ids(full_api.get(f"/{resource_type}", {param: value}))
        assert found == expected, (param, value)
        sizes.append(len(found))
    assert 1 in sizes, (param, "no value singles out one resource")


# Hand-written answers, independent of index_values / condition_matches (which the test above
# trusts): for every token, string, reference and date parameter, a value that only sample 0 has
# (sample 1 for ``medication``: only it has a medicationReference), read off samples() by eye.
_CLINICAL0 = {"identifier": "urn:ids|id-0", "subject": P1, "patient": P1, "encounter": "Encounter/e0"}
_PERSON0 = {"identifier": "urn:mrn|M-0", "name": "mia", "family": "match", "given": "mia", "gender": "female",
            "active": "true"}
ORACLE: dict[str, dict[str, str]] = {
    "Patient": {**_PERSON0, "birthdate": "1980-05-06", "organization": "Organization/o0",
                "general-practitioner": "Practitioner/d0"},
    "Practitioner": {**_PERSON0, "name": "mia match"},
    "RelatedPerson": {**_PERSON0, "patient": "Patient/p1"},
    "Organization": {"identifier": "urn:org|o-0", "name": "alpha", "active": "true", "type": "prov"},
    "Encounter": {"identifier": "enc-0", "subject": P1, "patient": "p1", "status": "finished", "class": "AMB",
                  "type": "checkup", "participant": "Practitioner/d0", "service-provider": "Organization/o0",
                  "date": "2020-01-15"},
    "Observation": {**_CLINICAL0, "status": "final", "code": "8867-4", "category": "vital-signs",
                    "performer": "Practitioner/d0", "date": "2020-01-15"},
    "Condition": {**_CLINICAL0, "code": "38341003", "category": "problem-list-item", "clinical-status": "active",
                  "verification-status": "confirmed", "onset-date": "2020-01-15", "recorded-date": "2020-01",
                  "asserter": "Practitioner/d0"},
    "AllergyIntolerance": {"identifier": "al-0", "patient": P1, "encounter": "Encounter/e0", "code": "peanut",
                           "category": "food", "clinical-status": "active", "verification-status": "confirmed",
                           "date": "2020", "recorder": "Practitioner/d0", "asserter": "Patient/p1"},
    "MedicationRequest": {**_CLINICAL0, "status": "active", "intent": "order", "category": "outpatient",
                          "code": "1049502", "medication": "Medication/m1", "requester": "Practitioner/d0",
                          "authoredon": "2020-01-15"},
    "Immunization": {"identifier": "imm-0", "patient": P1, "encounter": "Encounter/e0", "status": "completed",
                     "vaccine-code": "207", "performer": "Practitioner/d0", "date": "2020-01-15"},
    "Procedure": {**_CLINICAL0, "status": "completed", "code": "80146002", "category": "surgical",
                  "performer": "Practitioner/d0", "date": "2020-01-15"},
    "DiagnosticReport": {**_CLINICAL0, "status": "final", "code": "58410-2", "category": "HM",
                         "performer": "Organization/o0", "date": "2020-01-15"},
    "DocumentReference": {**_CLINICAL0, "identifier": "doc-0", "status": "current", "type": "34133-9",
                          "category": "clinical-note", "author": "Practitioner/d0", "date": "2020-01-15"},
    "CarePlan": {**_CLINICAL0, "status": "active", "intent": "plan", "category": "assess-plan",
                 "date": "2020-01-15"},
}
ORACLE_ONLY_SAMPLE_1 = {("MedicationRequest", "medication")}
ORACLE_TYPES = {"token", "string", "reference", "date"}
# Each date prefix against every date parameter (in the test above): sample 0 is in 2020 (Patient:
# born 1980), sample 1 in 2021 (born 1990).
DATE_PROBES = [("eq", {0}), ("ne", {1}), ("lt", set()), ("le", {0}), ("gt", {1}), ("ge", {0, 1})]


def test_the_oracle_covers_every_parameter_of_these_types():
    for resource_type, written in ORACLE.items():
        params = {name for name, definition in SEARCH_PARAMETERS[resource_type].items()
                  if getattr(definition, "type", definition) in ORACLE_TYPES}
        assert set(written) == params, (resource_type, params ^ set(written))


@pytest.mark.parametrize("resource_type", ORACLE)
def test_every_parameter_finds_the_hand_written_answer(full_api, stored, resource_type):
    ids = [i for i, _ in stored[resource_type]]
    for param, value in ORACLE[resource_type].items():
        expected = {ids[1]} if (resource_type, param) in ORACLE_ONLY_SAMPLE_1 else {ids[0]}
        assert _ids(full_api.get(f"/{resource_type}", {param: value})) == expected, (param, value)
    day = "1980-05-06" if resource_type == "Patient" else "2020-01-15"
    for param, definition in SEARCH_PARAMETERS[resource_type].items():
        if getattr(definition, "type", definition) != "date":
            continue
        for prefix, expected_samples in DATE_PROBES:
            found = _ids(full_api.get(f"/{resource_type}", {param: prefix + day}))
            assert found == {ids[n] for n in expected_samples}, (param, prefix)


def test_token_forms(full_api, stored):
    final_id = stored["Observation"][0][0]
    assert _ids(full_api.get("/Observation", {"code": "8867-4"})) == {final_id}
    assert _ids(full_api.get("/Observation", {"code": "http://example.org/codes|8867-4"})) == {final_id}
    assert _ids(full_api.get("/Observation", {"code": "http://other|8867-4"})) == set()
    assert _ids(full_api.get("/Observation", {"code": "http://example.org/codes|"})) == {
        i for i, _ in stored["Observation"]}
    assert _ids(full_api.get("/Observation", {"code": "8867-4,9279-1"})) == {i for i, _ in stored["Observation"]}
    assert _ids(full_api.get("/Encounter", {"identifier": "|enc-0"})) == {stored["Encounter"][0][0]}
    assert _ids(full_api.get("/Observation", {"identifier": "urn:ids|id-1"})) == {stored["Observation"][1][0]}
    assert _ids(full_api.get("/Observation", {"status": "final"})) == {final_id}
    assert _ids(full_api.get("/Patient", {"active": "true"})) == {stored["Patient"][0][0]}


def test_string_forms(full_api, stored):
    mia = stored["Patient"][0][0]
    assert _ids(full_api.get("/Patient", {"name": "MIA"})) == {mia}
    assert _ids(full_api.get("/Patient", {"family": "matc"})) == {mia}
    assert _ids(full_api.get("/Patient", {"family": "atch"})) == set()  # prefix, not substring
    assert _ids(full_api.get("/Patient", {"family:contains": "atch"})) == {mia}
    assert _ids(full_api.get("/Patient", {"given": "olaf"})) == {stored["Patient"][1][0]}
    assert _ids(full_api.get("/Practitioner", {"name": "mia match"})) == {stored["Practitioner"][0][0]}
    assert _ids(full_api.get("/Organization", {"name": "bh"})) == {stored["Organization"][1][0]}


def test_like_wildcards_in_values_are_literal(full_api, stored, project1):
    """``%``, ``_`` and ``\\`` in a prefix, contains or suffix search match only themselves."""
    for value in ("%", "_", "m%", "m_a", "\\", "%ia"):
        assert _ids(full_api.get("/Patient", {"name": value})) == set(), value
        assert _ids(full_api.get("/Patient", {"family:contains": value})) == set(), value
        assert _ids(full_api.get("/Observation", {"subject": value})) == set(), value  # a suffix match
    odd = seed(project1, {"resourceType": "Patient", "name": [{"family": "100%_real\\x"}]})["id"]
    assert _ids(full_api.get("/Patient", {"family": "100%_"})) == {odd}
    assert _ids(full_api.get("/Patient", {"family:contains": "%_real\\"})) == {odd}


def test_reference_forms(full_api, stored):
    first = stored["Observation"][0][0]
    assert _ids(full_api.get("/Observation", {"subject": P1})) == {first}
    assert _ids(full_api.get("/Observation", {"patient": "p1"})) == {first}
    assert _ids(full_api.get("/Observation", {"patient": "Patient/p1"})) == {first}
    assert _ids(full_api.get("/Observation", {"subject": "http://127.0.0.1:8000/fhir/R4/Patient/p1"})) == {first}
    assert _ids(full_api.get("/Observation", {"subject:Patient": "p1"})) == {first}
    assert _ids(full_api.get("/Observation", {"subject": "p1"})) == {first}
    assert _ids(full_api.get("/Observation", {"patient": "Group/p1"})) == set()
    assert _ids(full_api.get("/Observation", {"encounter": "Encounter/e1"})) == {stored["Observation"][1][0]}
    assert _ids(full_api.get("/Observation", {"performer": "Practitioner/d0"})) == {first}


@pytest.mark.parametrize(("value", "expected"), [
    ("2020-01-15", {0}), ("eq2020-01-15", {0}), ("2020", {0}), ("2020-01", {0}), ("2021", {1}),
    ("ge2021-01-01", {1}), ("gt2020-01-15", {1}), ("lt2020-01-15", set()), ("le2020-01-15", {0}),
    ("ne2020-01-15", {1}), ("lt2030", {0, 1}), ("2019", set()),
])
def test_date_prefixes(full_api, stored, value, expected):
    ids = [i for i, _ in stored["Condition"]]
    assert _ids(full_api.get("/Condition", {"onset-date": value})) == {ids[n] for n in expected}


def test_datetime_with_zone_is_compared_in_utc(full_api, stored):
    first = stored["Observation"][0][0]  # effective 2020-01-15T08:30:00+02:00 = 06:30Z
    assert _ids(full_api.get("/Observation", {"date": "2020-01-15T06:30:00Z"})) == {first}
    assert _ids(full_api.get("/Observation", {"date": "ge2020-01-15T06:31:00Z"})) == {stored["Observation"][1][0]}


def test_repeated_parameters_are_anded(full_api, stored):
    ids = [i for i, _ in stored["Condition"]]
    assert _ids(full_api.get("/Condition", {"onset-date": ["ge2020-01-01", "le2020-12-31"]})) == {ids[0]}
    assert _ids(full_api.get("/Condition", {"code": "38341003", "subject": P2})) == set()


def test_id_and_last_updated(full_api, stored):
    ids = [i for i, _ in stored["Observation"]]
    assert _ids(full_api.get("/Observation", {"_id": ids[0]})) == {ids[0]}
    assert _ids(full_api.get("/Observation", {"_id": ",".join(ids)})) == set(ids)
    assert _ids(full_api.get("/Observation", {"_lastUpdated": "ge2000-01-01"})) == set(ids)
    assert _ids(full_api.get("/Observation", {"_lastUpdated": "lt2000-01-01"})) == set()
    updated = stored["Observation"][1][1]["meta"]["lastUpdated"]
    assert ids[1] in _ids(full_api.get("/Observation", {"_lastUpdated": updated[:19] + "Z"}))


def test_paging_total_next_previous(full_api, alice):
    for n in range(25):
        seed(alice.project, observation(alice.profile, code=f"c{n}"))
    response = full_api.get("/Observation", {"_count": 10, "subject": alice.profile})
    bundle = response.json()
    assert bundle["type"] == "searchset" and bundle["total"] == 25 and len(bundle["entry"]) == 10
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert "previous" not in links
    seen = [e["resource"]["id"] for e in bundle["entry"]]
    pages = 1
    while "next" in links:
        url = urlsplit(links["next"])
        assert url.path == "/fhir/R4/Observation"
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        assert params["subject"] == alice.profile  # the search survives paging
        bundle = full_api.get("/Observation", params).json()
        assert bundle["total"] == 25
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert "previous" in links
        seen += [e["resource"]["id"] for e in bundle["entry"]]
        pages += 1
    assert pages == 3 and len(seen) == len(set(seen)) == 25
    page_two = full_api.get("/Observation", {"_count": 10, "_page": 2}).json()
    assert [e["resource"]["id"] for e in page_two["entry"]] == seen[10:20]


@pytest.mark.parametrize(("params", "expression"), [
    ({"_offset": "10001"}, "_offset"), ({"_offset": "99999999999999999999"}, "_offset"),
    ({"_page": "99999999999999999999"}, "_page"), ({"_page": "502", "_count": "20"}, "_page"),
])
def test_offset_beyond_the_maximum_is_400(full_api, alice, params, expression):
    """Never a database overflow (a 500): deep pages are refused."""
    assert_outcome(full_api.get("/Observation", params), 400, "invalid", expression)
    assert full_api.get("/Observation", {"_offset": "10000"}).json()["total"] == 0  # the maximum itself is fine
    assert full_api.get("/Observation", {"_page": "501", "_count": "20"}).status_code == 200


def test_dates_at_the_end_of_time(full_api, alice):
    """The last representable second is stored, indexed and searched, never a 500."""
    last = full_api.post("/Observation", {**observation(alice.profile), "effectiveDateTime": "9999-12-31T23:59:59Z"})
    assert last.status_code == 201, last.content
    assert _ids(full_api.get("/Observation", {"date": "9999"})) == {last.json()["id"]}
    assert _ids(full_api.get("/Observation", {"date": "ge9999-12-31"})) == {last.json()["id"]}
    assert full_api.get("/Observation", {"_lastUpdated": "ge9999-12-31T23:59:59Z"}).json()["total"] == 0
    assert_outcome(full_api.get("/Observation", {"date": "0001-01-01T00:00:00+01:00"}), 400, "invalid", "date")


def test_count_is_capped(full_api, alice):
    bundle = full_api.get("/Observation", {"_count": 5000}).json()
    assert "_count=100" in bundle["link"][0]["url"]


def test_summary_count_and_count_zero(full_api, stored):
    bundle = full_api.get("/Observation", {"_summary": "count"}).json()
    assert bundle["total"] == 2 and "entry" not in bundle
    bundle = full_api.get("/Observation", {"_count": 0}).json()
    assert bundle["total"] == 2 and bundle["entry"] == []


def test_sort_by_last_updated(full_api, stored):
    ids = [i for i, _ in stored["Observation"]]
    ascending = [e["resource"]["id"] for e in full_api.get("/Observation", {"_sort": "_lastUpdated"}).json()["entry"]]
    descending = [e["resource"]["id"] for e in full_api.get("/Observation", {"_sort": "-_lastUpdated"}).json()["entry"]]
    assert ascending == ids and descending == ids[::-1]


@pytest.mark.parametrize(("params", "expression"), [
    ({"unknown": "x"}, "unknown"),
    ({"birthdate": "2020"}, "birthdate"),  # a Patient parameter, not an Observation one
    ({"code:text": "x"}, "code:text"),
    ({"subject:missing": "true"}, "subject:missing"),
    ({"_revinclude": "AuditEvent:entity"}, "_revinclude"),  # AuditEvent is not stored here
    ({"_has:Observation:patient:code": "1"}, "_has:Observation:patient:code"),
    ({"date": "yesterday"}, "date"),
    ({"date": "sa2020"}, "date"),
    ({"code": ""}, "code"),
    ({"_sort": "code"}, "_sort"),
    ({"_summary": "true"}, "_summary"),
    ({"_count": "-1"}, "_count"),
    ({"_count": "ten"}, "_count"),
    ({"_offset": "-5"}, "_offset"),
    ({"_page": "0"}, "_page"),
])
def test_unsupported_search_is_400_never_over_returned(full_api, stored, params, expression):
    assert_outcome(full_api.get("/Observation", params), 400, "invalid", expression)
