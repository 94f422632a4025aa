"""Revoking logins: the one UPDATE behind logout, token revocation, replay detection and the services.

A module of its own so that both :mod:`medplum_auth.oauth2_validators` (the single-login fast
path, ``revoke_login``) and :mod:`medplum_auth.services` (``revoke_logins``) can use it without
importing each other. It imports only the models.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from .models import Login


def revoke(queryset: QuerySet[Login], reason: str) -> tuple[int, datetime]:
    """Revoke the logins of ``queryset`` not revoked yet; return how many and the time recorded.

    Every token issued from a revoked login stops working at once: its ``login_id`` is checked
    on each use. Logins revoked earlier keep their time and reason, so this is idempotent.
    Callers write the audit line.
    """
    max_length = Login._meta.get_field("revoked_reason").max_length
    if not reason or len(reason) > max_length:
        raise ValueError(f"A revocation reason of 1 to {max_length} characters is required.")
    now = timezone.now()
    count = queryset.filter(revoked_at__isnull=True).update(revoked_at=now, revoked_reason=reason)
    return count, now
