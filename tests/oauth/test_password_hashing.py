"""Password hashing: Argon2id first (``medplum_auth.hashers``), older hashes upgraded on sign-in.

These tests use the example site's real ``PASSWORD_HASHERS`` (the test settings keep a fast
hasher for everything else).
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.hashers import (
    Argon2PasswordHasher,
    PBKDF2PasswordHasher,
    check_password,
    identify_hasher,
    make_password,
)
from django.utils.module_loading import import_string

from config import settings as site_settings
from medplum_auth.hashers import Argon2idPasswordHasher
from medplum_auth.models import Login
from tests.factories import DEFAULT_PASSWORD
from tests.oauth.conftest import REDIRECT_URI, Flow, pkce_pair, query

#: What a hash of this hasher starts with: Argon2id, version 1.3, 19 MiB, 2 passes, 1 lane.
ARGON2ID_PREFIX = "argon2$argon2id$v=19$m=19456,t=2,p=1$"


@pytest.fixture
def site_hashers(settings):
    settings.PASSWORD_HASHERS = site_settings.PASSWORD_HASHERS


def stored_hash(membership) -> str:
    membership.user.refresh_from_db()
    return membership.user.password


def give_hash(membership, encoded: str) -> None:
    membership.user.password = encoded
    membership.user.save(update_fields=["password"])


def json_login(http, app, password: str = DEFAULT_PASSWORD):
    body = {"email": "pat@example.org", "password": password, "clientId": app.client_id,
            "codeChallenge": pkce_pair()[1], "codeChallengeMethod": "S256", "scope": "openid"}
    return http.post("/auth/login", json.dumps(body), content_type="application/json")


def test_site_hashers_put_argon2id_first_and_keep_djangos():
    hashers = site_settings.PASSWORD_HASHERS
    assert hashers[0] == "medplum_auth.hashers.Argon2idPasswordHasher"
    assert "django.contrib.auth.hashers.PBKDF2PasswordHasher" in hashers[1:]
    algorithms = [identify.algorithm for identify in map(import_string, hashers)]
    assert len(algorithms) == len(set(algorithms))  # one hasher per name: Django keeps only the last


def test_parameters_are_owasps_minimum_or_stronger():
    """OWASP Password Storage Cheat Sheet: Argon2id, m=19 MiB, t=2, p=1."""
    hasher = Argon2idPasswordHasher()
    assert (hasher.memory_cost, hasher.time_cost, hasher.parallelism) == (19456, 2, 1)
    assert hasher.algorithm == Argon2PasswordHasher.algorithm  # Django's encoding, readable both ways


def test_new_passwords_are_argon2id(site_hashers):
    encoded = make_password("correct horse battery staple")
    assert encoded.startswith(ARGON2ID_PREFIX), encoded
    assert check_password("correct horse battery staple", encoded)
    assert not check_password("wrong", encoded)
    assert isinstance(identify_hasher(encoded), Argon2idPasswordHasher)


def test_json_login_upgrades_a_pbkdf2_hash(client, site_hashers, public_client, patient):
    """``POST /auth/login`` (``@medplum/core`` ``startLogin``) re-hashes a PBKDF2 hash once it matched."""
    old = PBKDF2PasswordHasher().encode(DEFAULT_PASSWORD, PBKDF2PasswordHasher().salt())
    give_hash(patient, old)

    refused = json_login(client, public_client, password="wrong password")
    assert refused.status_code == 400, refused.content
    assert stored_hash(patient) == old  # a failed attempt changes nothing

    response = json_login(client, public_client)
    assert response.status_code == 200, response.content
    assert set(response.json()) >= {"login", "code"}
    upgraded = stored_hash(patient)
    assert upgraded.startswith(ARGON2ID_PREFIX), upgraded
    assert Login.objects.filter(user=patient.user).count() == 1

    again = json_login(client, public_client)  # the new hash verifies and stays as it is
    assert again.status_code == 200, again.content
    assert stored_hash(patient) == upgraded


def test_html_sign_in_upgrades_a_pbkdf2_hash(client, site_hashers, public_client, patient):
    """The code flow's sign-in page re-hashes too, and the flow goes on to a code."""
    give_hash(patient, make_password(DEFAULT_PASSWORD, hasher="pbkdf2_sha256"))
    flow = Flow(client, public_client)
    response = flow.follow(flow.sign_in(flow.authorize()))
    assert response.status_code == 302, response.content
    assert response["Location"].startswith(REDIRECT_URI + "?")
    assert "code" in query(response["Location"])
    assert stored_hash(patient).startswith(ARGON2ID_PREFIX)


def test_heavier_argon2_hash_is_rehashed_at_these_parameters(client, site_hashers, public_client, patient):
    """A hash by Django's own Argon2 hasher (100 MiB, 8 lanes) verifies, then moves to ours."""
    heavy = Argon2PasswordHasher().encode(DEFAULT_PASSWORD, Argon2PasswordHasher().salt())
    assert "m=102400,t=2,p=8" in heavy
    give_hash(patient, heavy)
    response = json_login(client, public_client)
    assert response.status_code == 200, response.content
    assert stored_hash(patient).startswith(ARGON2ID_PREFIX)
