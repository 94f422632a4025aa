from __future__ import annotations

import pytest

from tests.factories import AccessPolicyFactory, ClientApplicationFactory, MembershipFactory, ProjectFactory


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
