"""System checks: misconfiguration fails ``manage.py check``, not the first request."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import DatabaseError

from .conf import DEFAULTS, SDK_REFRESH_GRACE_PERIOD, SETTING_NAME, auth_settings
from .database import SQLITE_ENGINE
from .keys import ALGORITHMS

APPLICATION_MODEL = "medplum_auth.ClientApplication"
ACCOUNT_SIGN_IN_VIEW = "medplum_auth.views.account.AccountSignInView"


@checks.register(checks.Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    if getattr(settings, "OAUTH2_PROVIDER_APPLICATION_MODEL", None) != APPLICATION_MODEL:
        errors.append(checks.Error(
            "django-oauth-toolkit's Application model is not swapped for ClientApplication.",
            hint=f'Set OAUTH2_PROVIDER_APPLICATION_MODEL = "{APPLICATION_MODEL}" before the first migrate.',
            id="medplum_auth.E001",
        ))
    user_settings = getattr(settings, SETTING_NAME, None) or {}
    if not isinstance(user_settings, dict):
        errors.append(checks.Error(f"{SETTING_NAME} must be a dict.", id="medplum_auth.E002"))
        return errors
    for key in sorted(set(user_settings) - set(DEFAULTS)):
        errors.append(checks.Error(
            f"Unknown {SETTING_NAME} setting {key!r}.",
            hint=f"Known settings: {', '.join(sorted(DEFAULTS))} (see docs/settings.md).",
            id="medplum_auth.E002",
        ))
    if auth_settings.SIGNING_ALGORITHM not in ALGORITHMS:
        errors.append(checks.Error(
            f"SIGNING_ALGORITHM {auth_settings.SIGNING_ALGORITHM!r} is not supported.",
            hint=f"Use one of {', '.join(sorted(ALGORITHMS))}.", id="medplum_auth.E003",
        ))
    if int(auth_settings.CLIENT_SECRET_BYTES) < 32:
        errors.append(checks.Error(
            "CLIENT_SECRET_BYTES below 32 gives client secrets under 256 bits.",
            hint="Remove the setting or set it to 32 or more.", id="medplum_auth.E004",
        ))
    if int(auth_settings.RSA_KEY_SIZE) < 2048:
        errors.append(checks.Error("RSA_KEY_SIZE must be at least 2048.", id="medplum_auth.E005"))
    if not auth_settings.CLIENT_POLICY_RESTRICTS_USERS:
        errors.append(checks.Warning(
            "CLIENT_POLICY_RESTRICTS_USERS is off: a client's access policy does not restrict the users who "
            "sign in through it (Medplum's behaviour), so an app an admin restricted can still reach "
            "everything its users may.",
            hint="Remove the setting unless an app relies on Medplum's looser behaviour; then silence "
                 "medplum_auth.W005 in SILENCED_SYSTEM_CHECKS.", id="medplum_auth.W005",
        ))
    errors.extend(check_token_lifetimes())
    errors.extend(check_bundle_limits())
    errors.extend(check_registration_settings())
    errors.extend(check_dpop_settings())
    return errors


def check_dpop_settings() -> list[checks.CheckMessage]:
    """W018: a DPoP proof lifetime outside 5-600 s (too short for real clocks, or replayable for long)."""
    lifetime = auth_settings.DPOP_PROOF_LIFETIME
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or not 5 <= lifetime <= 600:
        return [checks.Warning(
            f"DPOP_PROOF_LIFETIME is {lifetime!r}: DPoP proofs should be accepted for 5 to 600 seconds "
            "(RFC 9449 §11.1).", hint=f"Remove the setting (default {DEFAULTS['DPOP_PROOF_LIFETIME']}).",
            id="medplum_auth.W018")]
    return []


PER_PROCESS_CACHES = {"django.core.cache.backends.locmem.LocMemCache": "a per-process",
                      "django.core.cache.backends.dummy.DummyCache": "a dummy"}


@checks.register(checks.Tags.security, deploy=True)
def check_shared_cache(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W017 (``check --deploy``): the cache that holds DPoP replay marks and throttles is not shared."""
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if settings.DEBUG or backend not in PER_PROCESS_CACHES:
        return []
    return [checks.Warning(
        f"CACHES['default'] is {PER_PROCESS_CACHES[backend]} cache: a DPoP proof replayed at another worker or "
        "instance is accepted, and failed sign-ins and token requests are counted per process"
        + (" (a dummy cache never refuses a replay or counts a failure at all)." if "dummy" in backend else "."),
        hint="Use a cache every worker shares (Redis: REDIS_URL in the example site; see docs/production.md). "
             "For one process only, silence medplum_auth.W017 in SILENCED_SYSTEM_CHECKS.",
        id="medplum_auth.W017",
    )]


def check_registration_settings() -> list[checks.CheckMessage]:
    """W016: open client registration is on, or names no project; PAR_LIFETIME out of RFC 9126's range."""
    errors: list[checks.CheckMessage] = []
    open_project = auth_settings.OPEN_CLIENT_REGISTRATION
    if open_project is not None:
        try:
            uuid.UUID(str(open_project))
        except ValueError:
            message = f"OPEN_CLIENT_REGISTRATION is {open_project!r}, not a project id: registration needs a token."
        else:
            message = (f"OPEN_CLIENT_REGISTRATION is on: anyone who reaches /oauth2/register can create clients "
                       f"in project {open_project}.")
        errors.append(checks.Warning(message, hint="Use initial access tokens (medplum_create_registration_token) "
                                     "and remove the setting, except for a sandbox project.",
                                     id="medplum_auth.W016"))
    lifetime = auth_settings.PAR_LIFETIME
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or not 5 <= lifetime <= 600:
        errors.append(checks.Warning(
            f"PAR_LIFETIME is {lifetime!r}: a pushed authorization request should live 5 to 600 seconds "
            "(RFC 9126 §2.2).", hint=f"Remove the setting (default {DEFAULTS['PAR_LIFETIME']}).",
            id="medplum_auth.W016"))
    return errors


def check_bundle_limits() -> list[checks.CheckMessage]:
    """W025: a FHIR batch/transaction limit that is not a positive integer refuses every Bundle."""
    errors: list[checks.CheckMessage] = []
    for name in ("FHIR_BUNDLE_MAX_ENTRIES", "FHIR_BUNDLE_MAX_BYTES"):
        value = getattr(auth_settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            errors.append(checks.Warning(
                f"{name} is {value!r}: every FHIR batch and transaction Bundle is refused (413).",
                hint=f"Remove the setting (default {DEFAULTS[name]}) or set it to a positive integer.",
                id="medplum_auth.W025"))
    return errors


SDK_LOOP = ("@medplum/core treats a token as expired while less than its refreshGracePeriod (default 300 s) is "
            "left before exp, so it requests a new token before every call; with client credentials "
            "startClientLogin() never returns and the client sends token requests in a tight loop.")


def check_token_lifetimes() -> list[checks.CheckMessage]:
    """W010, W011: access-token lifetimes at or below the SDK's refresh grace period."""
    warnings: list[checks.CheckMessage] = []
    lifetime = int(auth_settings.ACCESS_TOKEN_LIFETIME)
    if lifetime <= SDK_REFRESH_GRACE_PERIOD:
        warnings.append(checks.Warning(
            f"ACCESS_TOKEN_LIFETIME is {lifetime} s, at or below {SDK_REFRESH_GRACE_PERIOD} s. {SDK_LOOP}",
            hint="Remove the setting (3600 s, Medplum's) or set it above 300.", id="medplum_auth.W010",
        ))
    cap = int(auth_settings.CLIENT_CREDENTIALS_MAX_LIFETIME)
    if cap <= SDK_REFRESH_GRACE_PERIOD:
        warnings.append(checks.Warning(
            f"CLIENT_CREDENTIALS_MAX_LIFETIME is {cap} s, at or below {SDK_REFRESH_GRACE_PERIOD} s. {SDK_LOOP}",
            hint="Remove the setting (3600 s, Medplum's) or set it above 300. If no backend uses @medplum/core's "
                 "startClientLogin() and you follow SMART Backend Services' ≤ 300 s, silence medplum_auth.W011 in "
                 "SILENCED_SYSTEM_CHECKS.", id="medplum_auth.W011",
        ))
    return warnings


@checks.register(checks.Tags.database)
def check_client_token_lifetimes(app_configs: Any = None, databases: Any = None,
                                 **kwargs: Any) -> list[checks.CheckMessage]:
    """W012 (``check --database default`` only): clients whose own access-token lifetime is ≤ 300 s."""
    from .models import ClientApplication

    if not databases:
        return []
    try:
        short = list(ClientApplication.objects.filter(access_token_lifetime__range=(1, SDK_REFRESH_GRACE_PERIOD))
                     .order_by("client_id").values_list("client_id", "access_token_lifetime")[:20])
    except DatabaseError:
        return []
    return [checks.Warning(
        f"Client {client_id!r} has an access token lifetime of {lifetime} s, at or below "
        f"{SDK_REFRESH_GRACE_PERIOD} s. {SDK_LOOP}",
        hint="Clear the client's access token lifetime (the default is ACCESS_TOKEN_LIFETIME) or set it above 300.",
        obj=client_id, id="medplum_auth.W012",
    ) for client_id, lifetime in short]


@checks.register(checks.Tags.database)
def check_signing_key(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Runs with ``check --database default`` only: other checks must not touch the database."""
    from .models import SigningKey

    if not databases:
        return []
    try:
        has_key = SigningKey.objects.filter(status=SigningKey.Status.ACTIVE).exists()
    except DatabaseError:
        return []  # not migrated yet: migrate will create the key
    if has_key:
        return []
    return [checks.Warning(
        "There is no active token signing key; token requests will fail.",
        hint="Run `manage.py medplum_rotate_keys`.", id="medplum_auth.W001",
    )]


@checks.register(checks.Tags.security, deploy=True)
def check_deploy(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    warnings: list[checks.CheckMessage] = []
    if not isinstance(getattr(settings, SETTING_NAME, None) or {}, dict):
        return warnings  # E002 reports it; reading auth_settings would crash the check run
    if not str(auth_settings.ISSUER).startswith("https://"):
        warnings.append(checks.Warning(
            f"ISSUER {auth_settings.ISSUER!r} is not https; OAuth 2.0 requires TLS (RFC 6749 §3.1).",
            hint="Set MEDPLUM_AUTH['ISSUER'] (or MEDPLUM_ISSUER) to the public https URL.", id="medplum_auth.W002",
        ))
    if not auth_settings.CLIENT_SECRET_DIGEST_KEY:
        warnings.append(checks.Warning(
            "Client secret digests are keyed with SECRET_KEY.",
            hint="Set MEDPLUM_AUTH['CLIENT_SECRET_DIGEST_KEY'] to a separate long random value so a leaked "
                 "database alone cannot be used to test guessed secrets, and SECRET_KEY can rotate freely.",
            id="medplum_auth.W003",
        ))
    dot = getattr(settings, "OAUTH2_PROVIDER", {}) or {}
    if dot.get("PKCE_REQUIRED") is False:
        warnings.append(checks.Warning(
            "OAUTH2_PROVIDER['PKCE_REQUIRED'] is False; SMART and RFC 9700 §2.1.1 require PKCE.",
            hint="Remove the setting; use a client's 'PKCE optional' flag for the rare legacy client.",
            id="medplum_auth.W004",
        ))
    return warnings


def _sqlite_aliases() -> list[str]:
    return [alias for alias, db in settings.DATABASES.items() if db.get("ENGINE") == SQLITE_ENGINE]


@checks.register(checks.Tags.security, deploy=True)
def check_sqlite_in_production(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W014 (``check --deploy``): SQLite with ``DEBUG`` off, i.e. probably in production."""
    if settings.DEBUG:
        return []
    return [checks.Warning(
        f"DATABASES[{alias!r}] is SQLite: good for the demo, development, tests and one small instance "
        "on one host, but its writers queue for one lock per file and it cannot be shared by several hosts.",
        hint="Use PostgreSQL in production (DATABASE_URL=postgres://…); see the README's deployment notes. "
             "For a deliberate single small instance, silence medplum_auth.W014 in SILENCED_SYSTEM_CHECKS.",
        id="medplum_auth.W014",
    ) for alias in _sqlite_aliases()]


@checks.register(checks.Tags.compatibility)
def check_sqlite_options(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W015: a SQLite database without BEGIN IMMEDIATE fails concurrent writes instead of queueing them."""
    return [checks.Warning(
        f"DATABASES[{alias!r}] is SQLite without OPTIONS transaction_mode 'IMMEDIATE': two requests "
        "writing at once can fail with 'database is locked' (answered 503).",
        hint="Wrap the entry in medplum_auth.database.with_sqlite_options(...) (WAL, a busy timeout and "
             "transaction_mode 'IMMEDIATE'), as config/settings.py does.",
        id="medplum_auth.W015",
    ) for alias in _sqlite_aliases()
        if str(settings.DATABASES[alias].get("OPTIONS", {}).get("transaction_mode") or "").upper() != "IMMEDIATE"]


@checks.register(checks.Tags.security)
def check_admin_sign_in(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W013: the Django admin's own sign-in would let a user with a second factor in on a password."""
    from django.apps import apps
    from django.urls import NoReverseMatch, Resolver404, resolve, reverse

    if not apps.is_installed("django.contrib.admin"):
        return []
    try:
        match = resolve(reverse("admin:login"))
    except (NoReverseMatch, Resolver404):
        return []
    view = getattr(match.func, "view_class", None)
    if view is not None and f"{view.__module__}.{view.__qualname__}" == ACCOUNT_SIGN_IN_VIEW:
        return []  # compared by name: the checks sit below the views and do not import them
    return [checks.Warning(
        "The Django admin signs users in with its own form, which skips their second factor.",
        hint='Route it to ours before admin.site.urls: path("admin/login/", '
             "medplum_auth.views.account.AccountSignInView.as_view()).", id="medplum_auth.W013",
    )]


OPENAPI_HOOKS = {"PREPROCESSING_HOOKS": "medplum_auth.contrib.openapi.drop_described_endpoints",
                 "POSTPROCESSING_HOOKS": "medplum_auth.contrib.openapi.add_described_operations"}


@checks.register(checks.Tags.compatibility)
def check_openapi_hooks(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W030: with drf-spectacular installed but not our hooks, its schema leaves out every endpoint
    the apps describe (``openapi_operations``) and guesses wrongly at the FHIR views."""
    from django.apps import apps

    if not apps.is_installed("drf_spectacular"):
        return []
    configured = getattr(settings, "SPECTACULAR_SETTINGS", None) or {}
    missing = [f"{name}: {hook}" for name, hook in OPENAPI_HOOKS.items() if hook not in configured.get(name, [])]
    if not missing:
        return []
    return [checks.Warning(
        "drf-spectacular is installed, but SPECTACULAR_SETTINGS lacks medplum_auth's hooks, so its schema "
        "leaves out the OAuth, auth API and FHIR endpoints: " + "; ".join(missing) + ".",
        hint='Add them as config/settings.py does (keep "drf_spectacular.hooks.postprocess_schema_enums" '
             "first among the postprocessing hooks).", id="medplum_auth.W030",
    )]
