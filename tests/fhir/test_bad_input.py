"""Bad input anywhere in a search or a write is a 4xx OperationOutcome, never a 500: every
parameter of every type with hostile values (NUL, LIKE wildcards, huge numbers and dates at the
ends of time, very long values, empty parts), and the same values in ids, If-None-Exist and PATCH."""

from __future__ import annotations

import pytest

from tests.fhir.conftest import legacy_parameters

pytestmark = pytest.mark.django_db
SEARCH_PARAMETERS = legacy_parameters()  # the 14 types' parameters (tests/fhir/conftest.py)

VALUES = ["", "\x00", "a\x00b", "%", "ge", "9" * 5000, "Patient/" + "a" * 300, "|", "a|b|c", "eq", "2020-02-30",
          "99999", "-1", "ge9999-12-31T23:59:59Z", "lt0001-01-01", "0001-01-01T00:00:00+01:00", "x" * 2000,
          "Patient/", "/", "http://x/Patient/1", ",", "a,,b"]
CONTROL = ["_id", "_lastUpdated", "_compartment", "_count", "_offset", "_page", "_sort", "_summary", "_include",
           "_revinclude", "name:contains", "subject:Patient", "unknown"]


@pytest.mark.parametrize("resource_type", sorted(SEARCH_PARAMETERS))
def test_searches_never_fail_on_bad_values(full_api, alice, resource_type):
    failed = []
    for name in [*SEARCH_PARAMETERS[resource_type], *CONTROL]:
        for value in VALUES:
            response = full_api.get(f"/{resource_type}", {name: value})
            if response.status_code >= 500 or response["Content-Type"].split(";")[0] != "application/fhir+json":
                failed.append((name, value[:20], response.status_code))
    assert not failed, failed[:20]


def test_ids_conditions_and_patches_never_fail_on_bad_values(full_api, alice):
    failed = []
    for value in VALUES:
        responses = [
            full_api.get(f"/Patient/{value}"),
            full_api.get(f"/Patient/{alice.profile_id}/_history/{value}"),
            full_api.post("/Patient", {"resourceType": "Patient"}, HTTP_IF_NONE_EXIST=f"identifier={value}"),
            full_api.patch(f"/Patient/{alice.profile_id}", [{"op": "add", "path": f"/{value}", "value": value}]),
            full_api.patch(f"/Patient/{alice.profile_id}", [{"op": "add", "path": "/gender", "value": value}]),
        ]
        failed += [(value[:20], n, r.status_code) for n, r in enumerate(responses) if r.status_code >= 500]
    assert not failed, failed
