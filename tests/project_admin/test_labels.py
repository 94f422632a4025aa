"""Every form label of the Project Admin pages reads "Name", not Django's "Name:", like the rest of the UI."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from django.test import Client

from tests.factories import ClientApplicationFactory, MembershipFactory

from .conftest import text, url
from .test_members import invite, shown_link

pytestmark = pytest.mark.django_db

COLON_LABEL = re.compile(r":\s*</(?:label|legend)>")


def assert_no_colon_labels(response) -> None:
    body = text(response)
    assert response.status_code == 200
    assert re.search(r"<(?:label|legend)\b", body), "no labels on the page"
    found = COLON_LABEL.findall(body)
    assert not found, [body[max(0, m.start() - 60):m.end()] for m in COLON_LABEL.finditer(body)]


@pytest.mark.parametrize("page", ["client-create", "client", "policy-create", "preview", "member-invite", "member"])
def test_project_admin_form_labels_have_no_trailing_colon(pa, project, patient_policy, page):
    args = {"client": [ClientApplicationFactory(project=project).pk],
            "member": [MembershipFactory(project=project).pk]}.get(page, [])
    assert_no_colon_labels(pa.get(url(page, project, *args)))


def test_login_and_set_password_labels_have_no_trailing_colon(pa, project):
    assert_no_colon_labels(Client().get(url("login")))
    link = shown_link(pa.get(invite(pa, project)["Location"]))
    browser = Client()
    first = browser.get(urlsplit(link).path)
    form = browser.get(first["Location"])
    assert_no_colon_labels(form)
    assert '>New password</label>' in text(form)


def test_the_shared_forms_keep_djangos_suffix_in_the_django_admin():
    from medplum_auth.forms import ClientCreateForm

    assert ClientCreateForm().label_suffix == ":"
