"""Fixtures for the Project Admin pages: a project, its admin signed in, and another project."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import AccessPolicyFactory, MembershipFactory, ProjectFactory, UserFactory

SECRET_INPUT_RE = re.compile(r'id="client-secret"[^>]*value="([0-9a-f]{64})"')
LINK_INPUT_RE = re.compile(r'id="set-password-link"[^>]*value="([^"]+)"')


def url(name: str, project: Any = None, *args: Any) -> str:
    return reverse(f"project_admin:{name}", args=[project.pk, *args] if project is not None else list(args))


def text(response: Any) -> str:
    return response.content.decode()


def shown_secret(response: Any) -> str:
    match = SECRET_INPUT_RE.search(text(response))
    assert match, "the page shows no 64-hex secret"
    return match.group(1)


def shown_link(response: Any) -> str:
    match = LINK_INPUT_RE.search(text(response))
    assert match, "the page shows no set-password link"
    return match.group(1)


@pytest.fixture
def other_project(db):
    return ProjectFactory(name="Other clinic")


@pytest.fixture
def admin_member(project):
    user = UserFactory(email="admin@example.org", username="admin@example.org")
    return MembershipFactory(project=project, user=user, profile_type="Practitioner", admin=True,
                             profile_display="Ada Admin")


@pytest.fixture
def admin_user(admin_member):
    return admin_member.user


@pytest.fixture
def pa(admin_user) -> Client:
    """A browser signed in as the project's admin."""
    http = Client()
    http.force_login(admin_user)
    return http


@pytest.fixture
def patient_policy(project):
    return AccessPolicyFactory(project=project, name="Patient self-access", resources=[
        {"resourceType": "Patient", "criteria": "Patient?_id=%patient.id", "interaction": ["read"]},
        {"resourceType": "Observation", "criteria": "Observation?subject=%patient",
         "interaction": ["read", "search"]},
    ])
