"""SMART launch support on the FHIR side: the patient picker's search and ``smart-styles.json``.

:func:`search_patients` is registered with ``medplum_auth.launch.register_patient_search`` in
``FhirApiConfig.ready``, so the authorization server's standalone-launch patient picker searches
this project's Patient resources without importing this app.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from medplum_auth.access import login_inputs
from medplum_auth.contrib.rest_framework.exceptions import Forbidden

from .query import SearchError, parse_condition
from .repository import Repository

#: SMART App Launch 2.2 §"Styling": what ``smart_style_url`` in token responses points at.
SMART_STYLES: dict[str, Any] = {
    "color_background": "#f4f6f8",
    "color_error": "#ab091e",
    "color_highlight": "#1f6feb",
    "color_modal_backdrop": "rgba(31, 41, 51, 0.5)",
    "color_success": "#2f855a",
    "color_text": "#1f2933",
    "dim_border_radius": "6px",
    "dim_font_size": "16px",
    "dim_spacing_size": "16px",
    "font_family_body": 'system-ui, -apple-system, "Segoe UI", sans-serif',
    "font_family_heading": 'system-ui, -apple-system, "Segoe UI", sans-serif',
}
MAX_RESULTS = 20


def patient_display(content: dict[str, Any]) -> str:
    """``"Alice Anders"`` from the first name of a Patient (its ``text``, else given + family)."""
    for name in content.get("name") or []:
        if not isinstance(name, dict):
            continue
        if isinstance(name.get("text"), str) and name["text"].strip():
            return name["text"].strip()
        parts = [g for g in name.get("given") or [] if isinstance(g, str)]
        if isinstance(name.get("family"), str):
            parts.append(name["family"])
        if parts:
            return " ".join(parts)
    return ""


def search_patients(membership: Any, query: str = "", patient_id: str | None = None,
                    client: Any = None) -> list[dict[str, str]]:
    """Patients of the member's project that their access policy (and that of ``client``, the app
    they are signing in to) lets them read and search.

    ``query`` is matched word by word against the names (each word a name prefix); ``patient_id``
    looks up one patient instead. At most :data:`MAX_RESULTS`, most recently updated first.
    """
    policy = login_inputs(membership=membership, client=client).compile()
    repository = Repository(membership.project_id, policy)
    try:
        if patient_id is not None:
            conditions = [parse_condition("Patient", "_id", patient_id)]
        else:
            conditions = [parse_condition("Patient", "name", word) for word in query.replace(",", " ").split()]
        page = repository.search("Patient", conditions, sort="-_lastUpdated", count=MAX_RESULTS)
    except (SearchError, Forbidden):
        return []
    return [{"id": row.resource_id, "display": patient_display(row.content)} for row in page.rows]


@csrf_exempt  # public and GET only: any other method is a 405, not the CSRF failure page
@require_GET
def smart_styles(request: HttpRequest) -> JsonResponse:
    """``.well-known/smart-styles.json``: public, readable from any origin, like smart-configuration."""
    response = JsonResponse(SMART_STYLES)
    response["Access-Control-Allow-Origin"] = "*"
    response["Cache-Control"] = "public, max-age=3600"
    return response
