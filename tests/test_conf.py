from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from medplum_auth.conf import DEFAULTS, SETTING_NAME, AuthSettings, auth_settings

DOCS = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def test_setting_name():
    assert SETTING_NAME == "MEDPLUM_AUTH"


@pytest.mark.parametrize("user_settings", [{}, None])
def test_defaults(user_settings):
    with override_settings(MEDPLUM_AUTH=user_settings):
        for name, default in DEFAULTS.items():
            assert getattr(auth_settings, name) == default, name


def test_documented_default_values():
    assert DEFAULTS["ISSUER"] == "http://127.0.0.1:8000"
    assert DEFAULTS["CLIENT_SECRET_BYTES"] == 32
    assert DEFAULTS["SIGNING_ALGORITHM"] == "RS256"
    assert DEFAULTS["RSA_KEY_SIZE"] == 2048
    assert DEFAULTS["ALLOW_LOOPBACK_HTTP_REDIRECTS"] is True
    assert DEFAULTS["CLIENT_SECRET_DIGEST_KEY"] is None
    assert DEFAULTS["KEY_ENCRYPTION_SECRET"] is None


def test_user_value_overrides_only_its_key():
    with override_settings(MEDPLUM_AUTH={"SIGNING_ALGORITHM": "ES256"}):
        assert auth_settings.SIGNING_ALGORITHM == "ES256"
        assert DEFAULTS["RSA_KEY_SIZE"] == auth_settings.RSA_KEY_SIZE
        assert DEFAULTS["ISSUER"] == auth_settings.ISSUER


def test_override_settings_reloads_cached_values():
    original = auth_settings.ISSUER  # now cached
    assert original == settings.MEDPLUM_AUTH["ISSUER"]
    with override_settings(MEDPLUM_AUTH={"ISSUER": "https://auth.example.org"}):
        assert auth_settings.ISSUER == "https://auth.example.org"
        with override_settings(MEDPLUM_AUTH={"ISSUER": "https://other.example.org"}):
            assert auth_settings.ISSUER == "https://other.example.org"
        assert auth_settings.ISSUER == "https://auth.example.org"
    assert original == auth_settings.ISSUER


def test_other_settings_do_not_drop_the_cache(monkeypatch):
    auth_settings.ISSUER  # noqa: B018 - cache it
    reloads: list[bool] = []
    monkeypatch.setattr(auth_settings, "reload", lambda: reloads.append(True))
    with override_settings(SECRET_KEY="s" * 50):
        pass
    assert reloads == []
    with override_settings(MEDPLUM_AUTH={}):
        pass
    assert reloads == [True, True]  # on enter and on exit


def test_reload_drops_cached_values():
    local = AuthSettings(DEFAULTS)
    with override_settings(MEDPLUM_AUTH={"ISSUER": "https://one.example.org"}):
        assert local.ISSUER == "https://one.example.org"
        settings.MEDPLUM_AUTH["ISSUER"] = "https://two.example.org"  # mutated in place: no signal
        assert local.ISSUER == "https://one.example.org"
        local.reload()
        assert local.ISSUER == "https://two.example.org"


def test_settings_are_read_lazily():
    local = AuthSettings(DEFAULTS)  # created before the setting exists, like a module-level instance
    with override_settings(MEDPLUM_AUTH={"RSA_KEY_SIZE": 4096}):
        assert local.RSA_KEY_SIZE == 4096


@pytest.mark.parametrize("name", ["NOPE", "issuer", "user_settings_typo"])
def test_unknown_attribute_raises(name):
    with pytest.raises(AttributeError) as exc:
        getattr(auth_settings, name)
    assert str(exc.value) == f"Invalid MEDPLUM_AUTH setting: {name!r}"
    assert not hasattr(auth_settings, name)


def test_unknown_user_key_is_not_exposed():
    with override_settings(MEDPLUM_AUTH={"TYPO": 1}), pytest.raises(AttributeError):
        auth_settings.TYPO  # noqa: B018


@pytest.mark.parametrize(("user_settings", "expected"), [
    ({"ISSUER": "https://auth.example.org"}, "https://auth.example.org/fhir/R4"),
    ({"ISSUER": "https://auth.example.org/"}, "https://auth.example.org/fhir/R4"),
    ({"ISSUER": "https://example.org/auth"}, "https://example.org/auth/fhir/R4"),
    ({"ISSUER": "https://auth.example.org", "FHIR_BASE_URL": "https://fhir.example.org/r4"}, "https://fhir.example.org/r4"),
    ({"ISSUER": "https://auth.example.org", "FHIR_BASE_URL": "https://fhir.example.org/r4/"},
     "https://fhir.example.org/r4"),
    ({"ISSUER": "https://auth.example.org", "FHIR_BASE_URL": ""}, "https://auth.example.org/fhir/R4"),
    ({}, "http://127.0.0.1:8000/fhir/R4"),
])
def test_fhir_base_url(user_settings, expected):
    with override_settings(MEDPLUM_AUTH=user_settings):
        assert auth_settings.fhir_base_url == expected


# --- docs/settings.md keeps step with DEFAULTS ---------------------------------------------------


def _medplum_auth_section() -> str:
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(r"^## `MEDPLUM_AUTH`.*?(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, "docs/settings.md needs a '## `MEDPLUM_AUTH`' section"
    return match.group(0)


def _documented_keys(section: str) -> set[str]:
    headings = re.findall(r"^#{3,4} `([A-Z0-9_]+)`\s*$", section, flags=re.M)
    rows = re.findall(r"^\|\s*`([A-Z0-9_]+)`\s*\|", section, flags=re.M)
    return set(headings) | set(rows)


def test_docs_cover_every_setting_and_no_other():
    documented = _documented_keys(_medplum_auth_section())
    assert sorted(set(DEFAULTS) - documented) == [], "undocumented MEDPLUM_AUTH settings"
    assert sorted(documented - set(DEFAULTS)) == [], "docs describe settings that do not exist"


def test_every_setting_has_its_own_heading():
    section = _medplum_auth_section()
    headings = re.findall(r"^### `([A-Z0-9_]+)`\s*$", section, flags=re.M)
    assert sorted(headings) == sorted(DEFAULTS)


def test_docs_defaults_match_code():
    rows = re.findall(r"^\|\s*`([A-Z0-9_]+)`\s*\|\s*`([^`]*)`\s*\|", _medplum_auth_section(), flags=re.M)
    assert {name for name, _ in rows} == set(DEFAULTS)
    for name, literal in rows:
        assert ast.literal_eval(literal) == DEFAULTS[name], name
