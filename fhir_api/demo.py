"""Demo clinical data for ``medplum_seed_demo`` (``medplum_auth.signals.demo_seeded`` receiver).

A few vital-sign Observations and two Conditions of the demo patient, so that the README's FHIR
search returns something. Each resource has a fixed id derived from the project and its key, so
seeding again creates nothing (and a resource a user deleted is not brought back twice).
"""

from __future__ import annotations

import uuid
from typing import Any

from .models import Resource
from .repository import Repository

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
VITAL_SIGNS = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs", "display": "Vital Signs"}]}]


def _observation(code: str, display: str, value: float, unit: str, ucum: str, when: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "category": VITAL_SIGNS,
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
            "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum}}


def _condition(code: str, display: str, onset: str) -> dict[str, Any]:
    return {"resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
            "onsetDateTime": onset}


DEMO_RESOURCES: dict[str, dict[str, Any]] = {
    "heart-rate": _observation("8867-4", "Heart rate", 72, "beats/minute", "/min", "2026-01-15T09:30:00Z"),
    "body-weight": _observation("29463-7", "Body weight", 108.9, "kg", "kg", "2026-01-15T09:32:00Z"),
    "body-temperature": _observation("8310-5", "Body temperature", 36.8, "Cel", "Cel", "2026-01-15T09:35:00Z"),
    "hypertension": _condition("38341003", "Hypertensive disorder", "2019-04-02"),
    "type-2-diabetes": _condition("44054006", "Diabetes mellitus type 2", "2021-09-20"),
}


def demo_resource_id(project_id: Any, key: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:medplum-demo:{project_id}:{key}"))


def seed_demo_data(sender: Any, project: Any, patient: Any, **kwargs: Any) -> dict[str, Any]:
    """Create the demo patient's Observations and Conditions that do not exist yet."""
    repository = Repository(project.pk, None)
    reference = patient.profile
    created = 0
    counts: dict[str, int] = {}
    for key, template in DEMO_RESOURCES.items():
        resource_type = template["resourceType"]
        resource_id = demo_resource_id(project.pk, key)
        counts[resource_type] = counts.get(resource_type, 0) + 1
        if Resource.objects.filter(project_id=project.pk, resource_type=resource_type,
                                   resource_id=resource_id).exists():
            continue
        repository.create(resource_type, {**template, "subject": {"reference": reference}}, resource_id=resource_id)
        created += 1
    return {"fhir": {"patient": reference, "observations": counts.get("Observation", 0),
                     "conditions": counts.get("Condition", 0), "created": created,
                     "search": f"GET /fhir/R4/Observation?subject={reference}"}}
