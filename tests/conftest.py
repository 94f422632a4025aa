from __future__ import annotations

import os

import pytest
from django.core.cache import cache
from django.db import connection

from medplum_auth import tokens
from tests.factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory, ProjectFactory

#: Set for the PostgreSQL pass of ``.ci/run``: a test that needs PostgreSQL fails instead of
#: skipping, and the whole run stops at once when the test database is not PostgreSQL (a
#: ``DATABASE_URL`` that silently did not apply).
POSTGRES_REQUIRED = os.environ.get("MEDPLUM_POSTGRES_REQUIRED", "") not in {"", "0"}


def pytest_collection_modifyitems(config, items):
    if POSTGRES_REQUIRED and connection.vendor != "postgresql":
        raise pytest.UsageError(f"MEDPLUM_POSTGRES_REQUIRED is set but the test database is {connection.vendor}: "
                                "DATABASE_URL did not apply")


def pytest_runtest_setup(item):
    """``@pytest.mark.postgresql(reason=…)``: skip elsewhere, or fail when PostgreSQL is required."""
    marker = item.get_closest_marker("postgresql")
    if marker is not None and connection.vendor != "postgresql":
        reason = f"needs PostgreSQL: {marker.kwargs.get('reason', '')}; run with DATABASE_URL=postgres://…"
        if POSTGRES_REQUIRED:
            pytest.fail(f"{reason} (MEDPLUM_POSTGRES_REQUIRED is set)", pytrace=False)
        pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """With PostgreSQL required, a skip that names PostgreSQL (however it was written) is a failure."""
    report = yield
    if POSTGRES_REQUIRED and report.skipped and "postgres" in str(report.longrepr).lower():
        report.outcome = "failed"
        report.longrepr = f"skipped on the PostgreSQL pass (MEDPLUM_POSTGRES_REQUIRED is set): {report.longrepr}"
    return report


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Process-wide caches outlive each test's database: sign-in throttling counters and
    JWKS in the Django cache, signing keys in medplum_auth.tokens. Start and end every test clean."""
    cache.clear()
    tokens.clear_cache()
    yield
    cache.clear()
    tokens.clear_cache()


@pytest.fixture
def project(db):
    return ProjectFactory()


@pytest.fixture
def policy(project):
    return AccessPolicyFactory(project=project)


@pytest.fixture
def client_app(project):
    return ClientApplicationFactory(project=project)


@pytest.fixture
def patient_membership(project):
    return MembershipFactory(project=project, profile_type="Patient")
