"""The profile resource of a new member, so that ``fhirUser`` resolves through the API."""

from __future__ import annotations

import logging
from typing import Any

from .models import Resource
from .repository import Repository

logger = logging.getLogger(__name__)


def profile_content(membership: Any, first_name: str, last_name: str, email: str) -> dict[str, Any]:
    """Medplum's invite profile: name and work email (medplum/medplum: packages/server/src/admin/invite.ts)."""
    content: dict[str, Any] = {"resourceType": membership.profile_type}
    name: dict[str, Any] = {}
    if first_name:
        name["given"] = [first_name]
    if last_name:
        name["family"] = last_name
    if name:
        content["name"] = [name]
    if email:
        content["telecom"] = [{"system": "email", "use": "work", "value": email}]
    patient = (membership.access_parameters or {}).get("patient")
    if membership.profile_type == "RelatedPerson" and isinstance(patient, str) and patient.startswith("Patient/"):
        content["patient"] = {"reference": patient}
    return content


def create_profile_resource(sender: Any, membership: Any, user: Any, first_name: str = "", last_name: str = "",
                            **kwargs: Any) -> None:
    """``medplum_auth.signals.member_invited`` receiver: create ``<profile_type>/<profile_id>``.

    Runs inside the invite transaction, so a failure rolls the invite back. A RelatedPerson
    needs ``patient`` (R4B 1..1): without a ``patient`` policy parameter it is stored unvalidated.
    """
    exists = Resource.objects.filter(project_id=membership.project_id, resource_type=membership.profile_type,
                                     resource_id=membership.profile_id).exists()
    if exists:
        return
    content = profile_content(membership, first_name, last_name, getattr(user, "email", "") or "")
    validate = membership.profile_type != "RelatedPerson" or "patient" in content
    if not validate:
        logger.warning("RelatedPerson/%s created without a patient reference", membership.profile_id)
    Repository(membership.project_id, None).create(membership.profile_type, content,
                                                   resource_id=membership.profile_id, validate=validate)
