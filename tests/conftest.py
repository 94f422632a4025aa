from __future__ import annotations

import pytest
from django.core.cache import cache

from medplum_auth import tokens
from tests.factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory, ProjectFactory


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
