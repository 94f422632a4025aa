"""``medplum_prune_audit``: retention of the audit trail."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from medplum_auth import audit
from medplum_auth.models import SecurityEvent

pytestmark = pytest.mark.django_db


def aged(project, days: float) -> SecurityEvent:
    event = audit.record(audit.EventType.PROJECT_UPDATED, project=project)
    SecurityEvent.objects.filter(pk=event.pk).update(recorded=timezone.now() - timedelta(days=days))
    return event


def run(*args: str) -> dict:
    out = io.StringIO()
    call_command("medplum_prune_audit", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def test_older_than(project):
    SecurityEvent.objects.all().delete()
    old, recent = aged(project, 40), aged(project, 10)
    assert run("--older-than", "30") == {"deleted": 1, "older_than_days": 30}
    assert list(SecurityEvent.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not SecurityEvent.objects.filter(pk=old.pk).exists()


def test_retention_setting_applies_without_the_flag(project, monkeypatch):
    SecurityEvent.objects.all().delete()
    aged(project, 400), aged(project, 100)
    assert run() == {"deleted": 1, "older_than_days": 365}
    with override_settings(MEDPLUM_AUTH={**settings.MEDPLUM_AUTH, "AUDIT_RETENTION_DAYS": 50}):
        assert run()["deleted"] == 1
    with override_settings(MEDPLUM_AUTH={**settings.MEDPLUM_AUTH, "AUDIT_RETENTION_DAYS": None}):
        assert run()["deleted"] == 0
    assert SecurityEvent.objects.count() == 0


def test_batches(project, monkeypatch):
    SecurityEvent.objects.all().delete()
    monkeypatch.setattr(audit, "PRUNE_BATCH", 2)
    for _ in range(5):
        aged(project, 3)
    assert run("--older-than", "1")["deleted"] == 5


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "", "99999999999", "1e3", " "])
def test_bad_input_is_a_command_error(project, value):
    aged(project, 3)
    before = SecurityEvent.objects.count()
    with pytest.raises(CommandError, match="--older-than"):
        call_command("medplum_prune_audit", "--older-than", value, stdout=io.StringIO())
    assert SecurityEvent.objects.count() == before


@pytest.mark.parametrize("value", [0, -5, "365", True])
def test_bad_retention_setting_is_a_command_error(value):
    with override_settings(MEDPLUM_AUTH={**settings.MEDPLUM_AUTH, "AUDIT_RETENTION_DAYS": value}), \
            pytest.raises(CommandError, match="AUDIT_RETENTION_DAYS"):
        call_command("medplum_prune_audit", stdout=io.StringIO())


def test_cleanup_prunes_too(project):
    SecurityEvent.objects.all().delete()
    aged(project, 400)
    out = io.StringIO()
    call_command("medplum_cleanup", "--json", stdout=out)
    assert json.loads(out.getvalue())["deleted"]["audit_events"] == 1
