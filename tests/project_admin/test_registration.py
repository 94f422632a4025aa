"""Project Admin: initial access tokens for dynamic client registration (RFC 7591 §3)."""

from __future__ import annotations

import hashlib
import json
import re

from medplum_auth import services
from medplum_auth.models import ClientApplication, RegistrationToken
from tests.factories import AccessPolicyFactory, ProjectFactory
from tests.project_admin.conftest import text, url


def test_create_shows_the_token_once_and_it_registers_into_this_project(pa, project, client):
    policy = AccessPolicyFactory(project=project, name="Partner apps")
    page = pa.get(url("registration", project))
    assert page.status_code == 200 and "No registration tokens" in text(page)
    assert "/oauth2/register" in text(page)

    created = pa.post(url("registration", project), {"label": "Partner", "access_policy": str(policy.pk), "days": "30"})
    assert created.status_code == 303
    shown = pa.get(created["Location"])
    token = re.search(r'id="registration-token" type="text" readonly value="([^"]+)"', text(shown)).group(1)
    row = RegistrationToken.objects.get()
    assert row.digest == hashlib.sha256(token.encode()).hexdigest()
    assert (row.project, row.label, row.access_policy) == (project, "Partner", policy) and row.expires_at
    again = pa.get(created["Location"])
    assert token not in text(again) and "already shown" in text(again)

    response = client.post("/oauth2/register", json.dumps({"redirect_uris": ["https://app.example.org/cb"]}),
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 201, response.content
    registered = ClientApplication.objects.get(client_id=response.json()["client_id"])
    assert registered.project == project and registered.access_policy == policy


def test_revoke_stops_registration(pa, project, client):
    pa.post(url("registration", project), {"label": "Temp"})
    row = RegistrationToken.objects.get()
    response = pa.post(url("registration-revoke", project, row.pk))
    assert response.status_code == 303
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert "revoked" in text(pa.get(url("registration", project)))


def test_another_projects_policy_and_token_are_out_of_reach(pa, project):
    other = ProjectFactory()
    foreign_policy = AccessPolicyFactory(project=other)
    refused = pa.post(url("registration", project), {"access_policy": str(foreign_policy.pk)})
    assert refused.status_code == 400 and not RegistrationToken.objects.exists()
    pa.post(url("registration", project), {"days": "0"})
    assert not RegistrationToken.objects.exists()
    foreign, _ = services.create_registration_token(other)
    assert pa.post(url("registration-revoke", project, foreign.pk)).status_code == 404
    foreign.refresh_from_db()
    assert foreign.revoked_at is None


def test_a_registered_client_shows_in_the_client_list_and_its_page(pa, project, client):
    policy = AccessPolicyFactory(project=project, name="Partner apps")
    _row, token = services.create_registration_token(project, access_policy=policy)
    response = client.post("/oauth2/register", json.dumps({"client_name": "Self-registered app",
                                                           "redirect_uris": ["https://app.example.org/cb"]}),
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    registered = ClientApplication.objects.get(client_id=response.json()["client_id"])
    manual, _ = services.create_client(project, "Hand-made app", redirect_uris="https://app.example.org/cb")

    listing = text(pa.get(url("clients", project)))
    rows = {name: row for row in listing.split("<tr>")[1:] for name in ("Self-registered app", "Hand-made app")
            if name in row}
    assert registered.client_id in rows["Self-registered app"] and "Partner apps" in rows["Self-registered app"]
    assert 'class="badge registered"' in rows["Self-registered app"]
    assert 'class="badge registered"' not in rows["Hand-made app"]
    page = text(pa.get(url("client", project, registered.pk)))
    assert 'id="client-registration"' in page and "RFC 7591" in page
    assert 'id="client-registration"' not in text(pa.get(url("client", project, manual.pk)))
