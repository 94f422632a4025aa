"""The JWK Set from memory (``keys.jwks_document``): no query per request, a change made anywhere
served within ``JWKS_CHECK_SECONDS``, clients allowed to cache for ``JWKS_MAX_AGE``."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from medplum_auth import keys
from medplum_auth.models import SigningKey
from medplum_auth.services import rotate_signing_keys
from medplum_auth.views.discovery import JWKS_MAX_AGE

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    SigningKey.objects.all().delete()  # the key migrate made: each test starts from its own keys
    clock = Clock()
    monkeypatch.setattr(keys.time, "monotonic", clock)
    return clock


def kids(response) -> list[str]:
    return [key["kid"] for key in json.loads(response.content)["keys"]]


def test_served_from_memory_with_caching_headers(client, clock):
    first = rotate_signing_keys()
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == f"public, max-age={JWKS_MAX_AGE}"
    assert response["Access-Control-Allow-Origin"] == "*"
    assert json.loads(response.content) == keys.jwks()
    assert kids(response) == [first.kid]
    assert "d" not in json.loads(response.content)["keys"][0]  # public parts only
    with CaptureQueriesContext(connection) as queries:
        again = client.get("/.well-known/jwks.json")
    assert len(queries) == 0 and again.content == response.content


def test_a_rotation_in_this_process_is_served_at_once(client, clock):
    old = rotate_signing_keys()
    assert kids(client.get("/.well-known/jwks.json")) == [old.kid]
    new = rotate_signing_keys()
    assert kids(client.get("/.well-known/jwks.json")) == [new.kid, old.kid]  # the old one stays, inactive


def test_a_change_made_elsewhere_is_served_within_the_check_interval(client, clock):
    """Another instance (or SQL) retires a key: no signal reaches this process; the version check does."""
    old = rotate_signing_keys()
    new = rotate_signing_keys()
    assert kids(client.get("/.well-known/jwks.json")) == [new.kid, old.kid]
    SigningKey.objects.filter(pk=old.pk).update(status=SigningKey.Status.RETIRED, retired_at=timezone.now())

    clock.now += keys.JWKS_CHECK_SECONDS - 1
    assert kids(client.get("/.well-known/jwks.json")) == [new.kid, old.kid]  # still within the interval
    clock.now += 1
    with CaptureQueriesContext(connection) as queries:
        assert kids(client.get("/.well-known/jwks.json")) == [new.kid]
    assert len(queries) == 2  # the version, then the keys

    clock.now += keys.JWKS_CHECK_SECONDS
    with CaptureQueriesContext(connection) as queries:
        assert kids(client.get("/.well-known/jwks.json")) == [new.kid]
    assert len(queries) == 1  # unchanged version: the copy is kept, no key read


def test_key_version_changes_with_every_kind_of_change(clock):
    first = rotate_signing_keys()
    v1 = keys.key_version()
    second = rotate_signing_keys()
    v2 = keys.key_version()
    SigningKey.objects.filter(pk=first.pk).update(status=SigningKey.Status.RETIRED, retired_at=timezone.now())
    v3 = keys.key_version()
    SigningKey.objects.filter(pk=first.pk).delete()
    v4 = keys.key_version()
    assert len({v1, v2, v3, v4}) == 4
    assert second.kid
