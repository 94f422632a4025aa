"""``medplum_seed_demo`` seeds the demo patient's clinical data through ``fhir_api.demo`` (the
``demo_seeded`` signal), so the README's FHIR search finds something; seeding again adds nothing."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from fhir_api.models import Resource
from medplum_auth.models import ClientApplication, ProjectMembership

from .conftest import Api, mint

pytestmark = pytest.mark.django_db


def seed() -> dict:
    out = io.StringIO()
    call_command("medplum_seed_demo", "--json", stdout=out)
    return json.loads(out.getvalue())


def test_demo_patient_finds_observations_and_conditions_and_seeding_again_adds_nothing(client):
    data = seed()
    fhir = data["demo_data"]["fhir"]
    assert fhir == {"patient": data["patient"]["profile"], "observations": 3, "conditions": 2, "created": 5,
                    "search": f"GET /fhir/R4/Observation?subject={data['patient']['profile']}"}
    patient = ProjectMembership.objects.get(profile_type="Patient")
    app = ClientApplication.objects.get(client_id="medplum-demo-public")
    api = Api(client, mint(client=app, membership=patient, scope="openid profile"))

    observations = api.get("/Observation", {"subject": patient.profile}).json()
    assert observations["total"] == 3
    assert {e["resource"]["code"]["text"] for e in observations["entry"]} == {
        "Heart rate", "Body weight", "Body temperature"}
    conditions = api.get("/Condition").json()  # the patient's policy filters to their own
    assert conditions["total"] == 2
    assert all(e["resource"]["subject"]["reference"] == patient.profile for e in conditions["entry"])

    practitioner = ProjectMembership.objects.get(profile_type="Practitioner")
    doctor = Api(client, mint(client=app, membership=practitioner, scope="openid"))
    assert doctor.get("/Observation", {"subject": patient.profile}).json()["total"] == 3

    count = Resource.objects.count()
    again = seed()
    assert again["demo_data"]["fhir"]["created"] == 0 and Resource.objects.count() == count
