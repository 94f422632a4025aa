"""SMART App Launch context: EHR launches, the standalone patient picker's search hook.

* EHR launch (SMART App Launch 2.2 §"EHR launch"): :func:`medplum_auth.services.create_launch`
  stores a :class:`~medplum_auth.models.LaunchContext`; the app is opened at :func:`launch_url`
  and sends ``launch=<id>`` (scope ``launch``) to ``/oauth2/authorize``, which binds it with
  :func:`usable_launch` and :func:`claim_launch`.
* Standalone launch with ``launch/patient``: a user whose profile is not a Patient picks one.
  The search behind the picker is pluggable so that this app never imports a FHIR store:
  ``MEDPLUM_AUTH["PATIENT_SEARCH"]`` (a dotted path), else what an installed app registered with
  :func:`register_patient_search`, else none (the picker asks for a Patient id).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.utils import timezone
from django.utils.module_loading import import_string

from .conf import auth_settings
from .models import ClientApplication, LaunchContext, Login, ProfileType
from .queries import one_or_none
from .validators import add_params

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")

#: ``search(membership, query="", patient_id=None, client=None) -> list[{"id": str, "display": str}]``
#: (``client``: the app being signed in to, whose access policy restricts the member too)
PatientSearch = Callable[..., list[dict[str, str]]]

_registered: PatientSearch | None = None


def normalise_reference(value: Any, resource_type: str) -> str | None:
    """``Type/<id>`` from ``Type/<id>`` or a bare id (a FHIR id: 1–64 of ``A-Za-z0-9-.``); else ``None``."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    prefix = f"{resource_type}/"
    if value.startswith(prefix):
        value = value[len(prefix):]
    return f"{prefix}{value}" if ID_RE.match(value) else None


def reference_id(reference: str) -> str:
    """``"Patient/123"`` → ``"123"`` (SMART's token response carries ids, not references)."""
    return reference.partition("/")[2]


def launch_url(launch: LaunchContext) -> str:
    """``launch_uri?iss=<FHIR base>&launch=<id>``, keeping any query the launch URI has."""
    return add_params(launch.client.launch_uri, {"iss": auth_settings.fhir_base_url, "launch": str(launch.pk)})


def usable_launch(launch_id: Any, client: ClientApplication) -> LaunchContext | None:
    """The launch named by ``launch_id`` if it belongs to ``client``, is unexpired and unused."""
    import uuid

    try:
        pk = uuid.UUID(str(launch_id))
    except ValueError:
        return None
    launch = one_or_none(LaunchContext.objects.filter(pk=pk, client=client, used_at__isnull=True,
                                                      expires_at__gt=timezone.now()))
    return launch


def claim_launch(launch_id: Any, client: ClientApplication) -> LaunchContext | None:
    """Mark the launch used (once, atomically); ``None`` if it is no longer usable."""
    launch = usable_launch(launch_id, client)
    if launch is None:
        return None
    claimed = LaunchContext.objects.filter(pk=launch.pk, used_at__isnull=True).update(used_at=timezone.now())
    return launch if claimed else None


def launch_allowed(launch: LaunchContext, user: Any, membership: Any) -> bool:
    """Only the user who launched may use the launch; a Patient only with their own record."""
    if launch.created_by_id is not None and launch.created_by_id != getattr(user, "pk", None):
        return False
    return not (membership.profile_type == ProfileType.PATIENT and launch.patient != membership.profile)


def wants_patient_picker(scopes: list[str], membership: Any) -> bool:
    """Standalone ``launch/patient`` by a user without a patient of their own."""
    return "launch/patient" in scopes and membership.profile_type != ProfileType.PATIENT


# --- the patient search hook -----------------------------------------------------------------

def register_patient_search(func: PatientSearch | str | None) -> None:
    """Called by an installed app (in ``AppConfig.ready``) to offer its patient search."""
    global _registered
    _registered = import_string(func) if isinstance(func, str) else func


def patient_search() -> PatientSearch | None:
    """The configured search: the setting, else the registered one, else ``None``."""
    configured = auth_settings.PATIENT_SEARCH
    if configured:
        return import_string(configured) if isinstance(configured, str) else configured
    return _registered


def check_patient(membership: Any, value: Any, client: Any = None) -> str | None:
    """``Patient/<id>`` for a submitted choice the member may pick, else ``None``.

    With a search, the patient must be one it finds for ``membership`` through ``client``; without one any
    well-formed id is taken (the FHIR API still applies the member's access policy).
    """
    reference = normalise_reference(value, "Patient")
    if reference is None:
        return None
    search = patient_search()
    if search is None:
        return reference
    found = search(membership, patient_id=reference_id(reference), client=client)
    return reference if any(str(row.get("id")) == reference_id(reference) for row in found) else None


def context_fields(login: Login) -> dict[str, Any]:
    """The launch context of a token response and of introspection (SMART 2.2 §"Launch context")."""
    fields: dict[str, Any] = {}
    patient = login.patient_context
    if patient:
        fields["patient"] = reference_id(patient)
    if login.launch_encounter:
        fields["encounter"] = reference_id(login.launch_encounter)
    return fields
