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
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        messages.append(checks.Warning(
            f"MEDPLUM_AUTH['BINARY_MAX_BYTES'] is {limit!r}: it must be a positive number of bytes.",
            hint="Remove it (10 MiB) or set a positive integer.", id="medplum_auth.W029"))
    return messages
