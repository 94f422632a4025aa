"""System checks of the FHIR API's settings."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from medplum_auth.conf import auth_settings


def check_binary_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W028: ``BINARY_STORAGE`` names no storage; W029: ``BINARY_MAX_BYTES`` is not a positive integer."""
    messages: list[checks.CheckMessage] = []
    if not isinstance(getattr(settings, "MEDPLUM_AUTH", None) or {}, dict):
        return messages  # medplum_auth's own check reports the malformed setting
    alias = auth_settings.BINARY_STORAGE
    if alias not in getattr(settings, "STORAGES", {}):
        messages.append(checks.Warning(
            f"MEDPLUM_AUTH['BINARY_STORAGE'] is {alias!r}, which is not an alias in STORAGES: every Binary "
            "upload and download will fail.",
            hint="Set it to a key of STORAGES (\"default\"), or add that storage to STORAGES.",
            id="medplum_auth.W028"))
    limit = auth_settings.BINARY_MAX_BYTES
    if not _positive(limit):
        messages.append(checks.Warning(
            f"MEDPLUM_AUTH['BINARY_MAX_BYTES'] is {limit!r}: it must be a positive number of bytes.",
            hint="Remove it (10 MiB) or set a positive integer.", id="medplum_auth.W029"))
    return messages


def check_body_limits(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W026: ``FHIR_RESOURCE_MAX_BYTES`` that is not a positive integer, that exceeds
    ``FHIR_BUNDLE_MAX_BYTES``, or left at its default above a lowered ``DATA_UPLOAD_MAX_MEMORY_SIZE``
    (which an operator may think bounds FHIR bodies; it does not, :mod:`fhir_api.body`)."""
    if not isinstance(getattr(settings, "MEDPLUM_AUTH", None) or {}, dict):
        return []  # medplum_auth's own check reports the malformed setting
    limit = auth_settings.FHIR_RESOURCE_MAX_BYTES
    bundle = auth_settings.FHIR_BUNDLE_MAX_BYTES
    django_limit = getattr(settings, "DATA_UPLOAD_MAX_MEMORY_SIZE", None)
    if not _positive(limit):
        problem = f"is {limit!r}: it must be a positive number of bytes (every FHIR write would be refused)"
        hint = "Remove it (2.5 MiB) or set a positive integer."
    elif _positive(bundle) and limit > bundle:
        problem = (f"({limit}) is larger than FHIR_BUNDLE_MAX_BYTES ({bundle}): a resource that can be written "
                   "alone could not be sent in a batch or transaction")
        hint = "Raise FHIR_BUNDLE_MAX_BYTES to at least FHIR_RESOURCE_MAX_BYTES."
    elif _positive(django_limit) and django_limit < limit and "FHIR_RESOURCE_MAX_BYTES" not in settings.MEDPLUM_AUTH:
        problem = (f"is not set, so {limit} bytes: DATA_UPLOAD_MAX_MEMORY_SIZE ({django_limit}) is lower, but it does "
                   "not bound FHIR request bodies, and the FHIR API accepts the larger size")
        hint = "Set MEDPLUM_AUTH['FHIR_RESOURCE_MAX_BYTES'] to the limit you want for FHIR bodies."
    else:
        return []
    return [checks.Warning(f"MEDPLUM_AUTH['FHIR_RESOURCE_MAX_BYTES'] {problem}.", hint=hint, id="medplum_auth.W026")]


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
