from __future__ import annotations

from io import StringIO

import pytest
from django.conf import settings
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from medplum_auth.checks import (
    check_client_token_lifetimes,
    check_deploy,
    check_openapi_hooks,
    check_settings,
    check_signing_key,
)
from medplum_auth.models import SigningKey
from medplum_auth.services import ensure_signing_key
from tests.factories import ClientApplicationFactory

GOOD_DEPLOY = {"ISSUER": "https://auth.example.org", "CLIENT_SECRET_DIGEST_KEY": "digest-key-" + "d" * 40}


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [m.id for m in messages]


def test_settings_check_passes_on_the_example_configuration():
    assert check_settings() == []
    assert check_settings(app_configs=None, databases=None) == []


def test_deploy_check_passes_on_a_good_configuration():
    with override_settings(MEDPLUM_AUTH=GOOD_DEPLOY):
        assert check_deploy() == []


@pytest.mark.django_db
def test_signing_key_check_passes_with_an_active_key():
    ensure_signing_key()
    assert check_signing_key() == []


def test_e001_application_model_not_swapped():
    with override_settings(OAUTH2_PROVIDER_APPLICATION_MODEL="oauth2_provider.Application"):
        messages = check_settings()
    assert ids(messages) == ["medplum_auth.E001"]
    assert isinstance(messages[0], checks.Error)
    assert 'OAUTH2_PROVIDER_APPLICATION_MODEL = "medplum_auth.ClientApplication"' in messages[0].hint


def test_e002_unknown_key():
    with override_settings(MEDPLUM_AUTH={"ISSUER": "https://auth.example.org", "ISSUER_URL": "x", "SIGNING_ALG": "x"}):
        messages = check_settings()
    assert ids(messages) == ["medplum_auth.E002", "medplum_auth.E002"]
    assert [m.msg for m in messages] == ["Unknown MEDPLUM_AUTH setting 'ISSUER_URL'.",
                                         "Unknown MEDPLUM_AUTH setting 'SIGNING_ALG'."]
    assert "docs/settings.md" in messages[0].hint


@pytest.mark.parametrize("value", [["ISSUER"], "ISSUER=https://x", ("ISSUER",)])
def test_e002_not_a_dict(value):
    with override_settings(MEDPLUM_AUTH=value):
        messages = check_settings()
        assert check_deploy() == []  # must not crash; E002 already reports it
    assert ids(messages) == ["medplum_auth.E002"]
    assert messages[0].msg == "MEDPLUM_AUTH must be a dict."


@pytest.mark.parametrize("algorithm", ["HS256", "RS512", "none"])
def test_e003_bad_algorithm(algorithm):
    with override_settings(MEDPLUM_AUTH={"SIGNING_ALGORITHM": algorithm}):
        messages = check_settings()
    assert ids(messages) == ["medplum_auth.E003"]
    assert messages[0].msg == f"SIGNING_ALGORITHM {algorithm!r} is not supported."
    assert messages[0].hint == "Use one of ES256, ES384, RS256."


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "ES384"])
def test_supported_algorithms_pass(algorithm):
    with override_settings(MEDPLUM_AUTH={"SIGNING_ALGORITHM": algorithm}):
        assert check_settings() == []


@pytest.mark.parametrize(("size", "fires"), [(16, True), (31, True), (32, False), (64, False)])
def test_e004_short_client_secret(size, fires):
    with override_settings(MEDPLUM_AUTH={"CLIENT_SECRET_BYTES": size}):
        assert ids(check_settings()) == (["medplum_auth.E004"] if fires else [])


@pytest.mark.parametrize(("size", "fires"), [(1024, True), (2047, True), (2048, False), (4096, False)])
def test_e005_small_rsa_key(size, fires):
    with override_settings(MEDPLUM_AUTH={"RSA_KEY_SIZE": size}):
        assert ids(check_settings()) == (["medplum_auth.E005"] if fires else [])


def test_several_errors_reported_together():
    with override_settings(OAUTH2_PROVIDER_APPLICATION_MODEL="oauth2_provider.Application",
                           MEDPLUM_AUTH={"SIGNING_ALGORITHM": "HS256", "CLIENT_SECRET_BYTES": 8, "RSA_KEY_SIZE": 512,
                                         "NOPE": 1}):
        assert ids(check_settings()) == ["medplum_auth.E001", "medplum_auth.E002", "medplum_auth.E003",
                                         "medplum_auth.E004", "medplum_auth.E005"]


@pytest.mark.django_db
def test_w001_no_active_signing_key():
    SigningKey.objects.update(status=SigningKey.Status.INACTIVE)
    assert check_signing_key() == []  # only with --database: plain `check` never queries
    messages = check_signing_key(databases=["default"])
    assert ids(messages) == ["medplum_auth.W001"]
    assert isinstance(messages[0], checks.Warning)
    assert "medplum_rotate_keys" in messages[0].hint


@pytest.mark.spec("RFC 6749 §3.1")
@pytest.mark.parametrize("issuer", ["http://auth.example.org", "http://127.0.0.1:8000", "auth.example.org"])
def test_w002_issuer_not_https(issuer):
    with override_settings(MEDPLUM_AUTH={**GOOD_DEPLOY, "ISSUER": issuer}):
        messages = check_deploy()
    assert ids(messages) == ["medplum_auth.W002"]
    assert repr(issuer) in messages[0].msg


def test_w003_no_digest_key():
    with override_settings(MEDPLUM_AUTH={"ISSUER": "https://auth.example.org"}):
        messages = check_deploy()
    assert ids(messages) == ["medplum_auth.W003"]
    assert "CLIENT_SECRET_DIGEST_KEY" in messages[0].hint


@pytest.mark.spec("RFC 9700 §2.1.1")
def test_w004_pkce_not_required():
    dot = {**settings.OAUTH2_PROVIDER, "PKCE_REQUIRED": False}
    with override_settings(MEDPLUM_AUTH=GOOD_DEPLOY, OAUTH2_PROVIDER=dot):
        assert ids(check_deploy()) == ["medplum_auth.W004"]
    # Leaving the key out keeps DOT's default (required): no warning.
    dot = {k: v for k, v in settings.OAUTH2_PROVIDER.items() if k != "PKCE_REQUIRED"}
    with override_settings(MEDPLUM_AUTH=GOOD_DEPLOY, OAUTH2_PROVIDER=dot):
        assert check_deploy() == []


def test_checks_are_registered():
    registered = checks.registry.registry.get_checks(include_deployment_checks=True)
    assert {check_settings, check_signing_key, check_deploy} <= set(registered)
    assert check_deploy not in checks.registry.registry.get_checks(include_deployment_checks=False)


@pytest.mark.django_db
def test_check_command_reports_errors():
    with (override_settings(MEDPLUM_AUTH={"SIGNING_ALGORITHM": "HS256", "TYPO": 1}),
          pytest.raises(SystemCheckError) as exc):
        call_command("check", "--deploy", stdout=StringIO(), stderr=StringIO())
    assert "medplum_auth.E002" in str(exc.value)
    assert "medplum_auth.E003" in str(exc.value)


@pytest.mark.django_db
def test_check_command_reports_non_dict_settings_without_crashing():
    with override_settings(MEDPLUM_AUTH=["ISSUER"]), pytest.raises(SystemCheckError) as exc:
        call_command("check", "--deploy", stdout=StringIO(), stderr=StringIO())
    assert "medplum_auth.E002" in str(exc.value)
    assert "MEDPLUM_AUTH must be a dict." in str(exc.value)


@pytest.mark.django_db
def test_check_deploy_command_reports_warnings():
    SigningKey.objects.update(status=SigningKey.Status.INACTIVE)
    stderr = StringIO()
    with override_settings(MEDPLUM_AUTH={"ISSUER": "http://auth.example.org"},
                           OAUTH2_PROVIDER={**settings.OAUTH2_PROVIDER, "PKCE_REQUIRED": False}):
        # --fail-level: the example site's DOT config trips oauth2_provider.E003 under --deploy.
        call_command("check", "--deploy", "--database", "default", "--fail-level", "CRITICAL",
                     stdout=StringIO(), stderr=stderr)
    output = stderr.getvalue()
    for check_id in ("medplum_auth.W001", "medplum_auth.W002", "medplum_auth.W003", "medplum_auth.W004"):
        assert check_id in output


@pytest.mark.django_db
def test_check_deploy_command_quiet_about_us_when_configured():
    ensure_signing_key()
    stdout, stderr = StringIO(), StringIO()
    # On the SQLite test run, W014 says what it should; a deliberate SQLite deployment silences it.
    # The tests' cache is a shared Redis one here only when configured so (W017 has its own test).
    with override_settings(MEDPLUM_AUTH=GOOD_DEPLOY, SILENCED_SYSTEM_CHECKS=["medplum_auth.W014"],
                           CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                               "LOCATION": "redis://127.0.0.1:6379"}}):
        call_command("check", "--deploy", "--database", "default", "--fail-level", "CRITICAL",
                     stdout=stdout, stderr=stderr)
    output = stdout.getvalue() + stderr.getvalue()
    assert "System check identified" in output
    assert "medplum_auth." not in output


def test_medplums_looser_client_policy_behaviour_is_warned_about():
    with override_settings(MEDPLUM_AUTH={"CLIENT_POLICY_RESTRICTS_USERS": False}):
        messages = check_settings()
    assert ids(messages) == ["medplum_auth.W005"]
    assert "does not restrict the users" in messages[0].msg
    with override_settings(MEDPLUM_AUTH={"CLIENT_POLICY_RESTRICTS_USERS": True}):
        assert check_settings() == []


@pytest.mark.parametrize(("setting", "check_id"), [("ACCESS_TOKEN_LIFETIME", "medplum_auth.W010"),
                                                   ("CLIENT_CREDENTIALS_MAX_LIFETIME", "medplum_auth.W011")])
@pytest.mark.parametrize(("seconds", "fires"), [(60, True), (300, True), (301, False), (3600, False)])
def test_access_token_lifetimes_at_or_below_the_sdk_grace_period_are_warned_about(setting, check_id, seconds, fires):
    with override_settings(MEDPLUM_AUTH={setting: seconds}):
        messages = check_settings()
    assert ids(messages) == ([check_id] if fires else [])
    if fires:
        assert f"{setting} is {seconds} s" in messages[0].msg
        assert "refreshGracePeriod" in messages[0].msg and "startClientLogin() never returns" in messages[0].msg


def test_default_token_lifetimes_are_above_the_sdk_grace_period():
    from medplum_auth.conf import DEFAULTS, SDK_REFRESH_GRACE_PERIOD

    assert DEFAULTS["ACCESS_TOKEN_LIFETIME"] == DEFAULTS["CLIENT_CREDENTIALS_MAX_LIFETIME"] == 3600
    assert SDK_REFRESH_GRACE_PERIOD == 300


@pytest.mark.django_db
def test_w012_clients_with_a_short_own_lifetime(settings):
    ClientApplicationFactory(client_id="short-app", access_token_lifetime=300)
    ClientApplicationFactory(client_id="fine-app", access_token_lifetime=301)
    ClientApplicationFactory(client_id="default-app", access_token_lifetime=None)
    assert check_client_token_lifetimes() == []  # only with --database
    messages = check_client_token_lifetimes(databases=["default"])
    assert ids(messages) == ["medplum_auth.W012"]
    assert "'short-app'" in messages[0].msg and "300 s" in messages[0].msg and "refreshGracePeriod" in messages[0].msg


def test_the_django_admin_sign_in_must_be_ours():
    from medplum_auth.checks import check_admin_sign_in

    assert check_admin_sign_in() == []  # the example site routes /admin/login/ to the account sign-in
    with override_settings(ROOT_URLCONF="tests.urls_plain_admin"):
        messages = check_admin_sign_in()
    assert ids(messages) == ["medplum_auth.W013"] and "skips their second factor" in messages[0].msg


@pytest.mark.parametrize(("seconds", "fires"), [(4, True), (5, False), (60, False), (600, False), (601, True),
                                                ("60", True), (True, True)])
def test_w018_dpop_proof_lifetime_out_of_range(seconds, fires):
    with override_settings(MEDPLUM_AUTH={"DPOP_PROOF_LIFETIME": seconds}):
        messages = check_settings()
    assert ids(messages) == (["medplum_auth.W018"] if fires else [])
    if fires:
        assert "RFC 9449" in messages[0].msg


def test_w017_a_cache_workers_do_not_share_is_a_deploy_warning():
    from django.core.checks.registry import registry

    from medplum_auth.checks import check_shared_cache

    locmem = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    dummy = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    redis = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://x:6379"}}
    with override_settings(CACHES=locmem, DEBUG=False):
        messages = check_shared_cache()
    assert ids(messages) == ["medplum_auth.W017"] and "replayed at another worker" in messages[0].msg
    with override_settings(CACHES=dummy, DEBUG=False):
        assert "never refuses a replay" in check_shared_cache()[0].msg
    with override_settings(CACHES=redis, DEBUG=False):
        assert check_shared_cache() == []
    with override_settings(CACHES=locmem, DEBUG=True):
        assert check_shared_cache() == []
    assert check_shared_cache in registry.get_checks(include_deployment_checks=True)
    assert check_shared_cache not in registry.get_checks(include_deployment_checks=False)


SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}
POSTGRES = {"ENGINE": "django.db.backends.postgresql", "NAME": "medplum"}


def test_w014_sqlite_with_debug_off_is_a_deploy_warning():
    from django.core.checks.registry import registry

    from medplum_auth.checks import check_sqlite_in_production

    with override_settings(DATABASES={"default": SQLITE}, DEBUG=False):
        messages = check_sqlite_in_production()
    assert ids(messages) == ["medplum_auth.W014"] and "PostgreSQL" in messages[0].hint
    with override_settings(DATABASES={"default": SQLITE}, DEBUG=True):
        assert check_sqlite_in_production() == []
    with override_settings(DATABASES={"default": POSTGRES}, DEBUG=False):
        assert check_sqlite_in_production() == []
    # Only `check --deploy` runs it: CI's `manage.py check` on SQLite with DEBUG off stays clean.
    assert check_sqlite_in_production in registry.get_checks(include_deployment_checks=True)
    assert check_sqlite_in_production not in registry.get_checks(include_deployment_checks=False)


def test_w015_sqlite_without_immediate_transactions():
    from medplum_auth.checks import check_sqlite_options
    from medplum_auth.database import with_sqlite_options

    with override_settings(DATABASES={"default": SQLITE}):
        assert ids(check_sqlite_options()) == ["medplum_auth.W015"]
    with override_settings(DATABASES={"default": with_sqlite_options(SQLITE), "pg": POSTGRES}):
        assert check_sqlite_options() == []


@pytest.mark.parametrize(("name", "value", "fires"), [
    ("FHIR_BUNDLE_MAX_ENTRIES", 0, True), ("FHIR_BUNDLE_MAX_ENTRIES", "100", True),
    ("FHIR_BUNDLE_MAX_ENTRIES", 1, False),
    ("FHIR_BUNDLE_MAX_BYTES", -1, True), ("FHIR_BUNDLE_MAX_BYTES", True, True), ("FHIR_BUNDLE_MAX_BYTES", 1024, False),
])
def test_w025_bundle_limits(name, value, fires):
    with override_settings(MEDPLUM_AUTH={name: value}):
        messages = check_settings()
    assert ids(messages) == (["medplum_auth.W025"] if fires else [])
    if fires:
        assert name in messages[0].msg and messages[0].level == checks.WARNING


@pytest.mark.parametrize("overrides, text", [
    ({"OPEN_CLIENT_REGISTRATION": "6f1c2a0e-8f0b-4d7e-9a51-3b2b0c9d1e77"}, "OPEN_CLIENT_REGISTRATION is on"),
    ({"OPEN_CLIENT_REGISTRATION": "Clinic"}, "not a project id"),
    ({"PAR_LIFETIME": 0}, "PAR_LIFETIME is 0"),
    ({"PAR_LIFETIME": 3600}, "PAR_LIFETIME is 3600"),
    ({"PAR_LIFETIME": "90"}, "PAR_LIFETIME is '90'"),
])
def test_w016_registration_settings(overrides, text):
    with override_settings(MEDPLUM_AUTH=overrides):
        messages = check_settings()
    assert ids(messages) == ["medplum_auth.W016"]
    assert text in messages[0].msg and messages[0].level == checks.WARNING


def test_w016_is_quiet_by_default():
    with override_settings(MEDPLUM_AUTH={"PAR_LIFETIME": 90, "OPEN_CLIENT_REGISTRATION": None}):
        assert "medplum_auth.W016" not in ids(check_settings())


@pytest.mark.parametrize("spectacular", [
    {}, {"PREPROCESSING_HOOKS": ["medplum_auth.contrib.openapi.drop_described_endpoints"]},
    {"POSTPROCESSING_HOOKS": ["medplum_auth.contrib.openapi.add_described_operations"]},
])
def test_w030_drf_spectacular_without_our_hooks(settings, spectacular):
    assert check_openapi_hooks() == []  # the example site names both
    settings.SPECTACULAR_SETTINGS = spectacular
    messages = check_openapi_hooks()
    assert [m.id for m in messages] == ["medplum_auth.W030"]
    for name, hook in (("PREPROCESSING_HOOKS", "drop_described_endpoints"),
                       ("POSTPROCESSING_HOOKS", "add_described_operations")):
        assert (hook in messages[0].msg) == (hook not in str(spectacular.get(name, ""))), messages[0].msg


def test_w030_quiet_without_drf_spectacular(settings):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if not app.startswith("drf_spectacular")]
    settings.SPECTACULAR_SETTINGS = {}
    assert check_openapi_hooks() == []
