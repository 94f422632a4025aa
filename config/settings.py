"""Example site settings, driven by environment variables (see README "Configuration")."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from corsheaders import defaults as corsheaders_defaults
from django.core.exceptions import ImproperlyConfigured

from medplum_auth.database import with_sqlite_options
from medplum_auth.defaults import OAUTH2_PROVIDER as OAUTH2_PROVIDER_DEFAULTS

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG")
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set the SECRET_KEY environment variable (or DEBUG=1 for local development).")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production-0123456789abcdef"
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the docs page's Swagger UI files, served from here (no CDN)
    "oauth2_provider",
    "medplum_auth",
    "project_admin",
    "fhir_api",
]

MIDDLEWARE = [
    "medplum_auth.middleware.RequestIdMiddleware",
    "medplum_auth.middleware.DatabaseBusyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite (the default, or any sqlite:// DATABASE_URL) gets the options that let several server
# processes write at once: WAL, a busy timeout and BEGIN IMMEDIATE (medplum_auth.database).
DATABASES = {
    "default": with_sqlite_options(dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60"))
    ))
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("DB_PREPARED_STATEMENTS", True):
    # Server-side binding lets psycopg prepare the hot queries (token and login lookups) after
    # a few uses, so PostgreSQL stops re-planning a multi-table join on every request. Turn it
    # off (DB_PREPARED_STATEMENTS=0) behind a pooler in transaction mode, e.g. PgBouncer < 1.21.
    DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if os.environ.get("REDIS_URL"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": os.environ["REDIS_URL"]}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Email (password reset links): SMTP when EMAIL_HOST is set, else written to the console.
if os.environ.get("EMAIL_HOST"):
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = os.environ["EMAIL_HOST"]
    EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "587"))
    EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", EMAIL_PORT == 587)
    EMAIL_TIMEOUT = 10
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "no-reply@localhost")

# Argon2id at OWASP's parameters first (new and changed passwords, and every older hash on its
# next successful sign-in); Django's other defaults after it, so hashes they made still verify.
# (Django's own Argon2PasswordHasher is left out: it shares the name "argon2", and ours reads any
# argon2 hash's parameters from the hash.)
PASSWORD_HASHERS = [
    "medplum_auth.hashers.Argon2idPasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Uploaded files: FHIR Binary content (MEDPLUM_AUTH["BINARY_STORAGE"] names the storage; point
# "default", or another alias, at a django-storages backend such as S3 in production).
MEDIA_ROOT = os.environ.get("MEDIA_ROOT", str(BASE_DIR / "media"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
                    if not DEBUG else "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Security headers and cookies. HTTPS-only settings turn on when the issuer is https.
SECURE_CONTENT_TYPE_NOSNIFF = True
# same-origin, not no-referrer: under no-referrer browsers send "Origin: null" with same-origin form
# POSTs and Django's CSRF check refuses them (the admin login and our sign-in pages).
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
_HTTPS = os.environ.get("MEDPLUM_ISSUER", "").startswith("https://")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _HTTPS
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _HTTPS)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000" if _HTTPS else "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = _HTTPS
if env_bool("BEHIND_PROXY"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# django-oauth-toolkit: our ClientApplication replaces its Application model.
OAUTH2_PROVIDER_APPLICATION_MODEL = "medplum_auth.ClientApplication"
OAUTH2_PROVIDER = dict(OAUTH2_PROVIDER_DEFAULTS)  # every RFC 9700 gate on (medplum_auth.defaults)

MEDPLUM_AUTH = {
    "ISSUER": os.environ.get("MEDPLUM_ISSUER", "http://127.0.0.1:8000").rstrip("/"),
}
if os.environ.get("MEDPLUM_CLIENT_SECRET_DIGEST_KEY"):
    MEDPLUM_AUTH["CLIENT_SECRET_DIGEST_KEY"] = os.environ["MEDPLUM_CLIENT_SECRET_DIGEST_KEY"]
if os.environ.get("MEDPLUM_TRUSTED_PROXY_HEADER"):
    MEDPLUM_AUTH["TRUSTED_PROXY_HEADER"] = os.environ["MEDPLUM_TRUSTED_PROXY_HEADER"]
if os.environ.get("MEDPLUM_AUDIT_RETENTION_DAYS"):
    MEDPLUM_AUTH["AUDIT_RETENTION_DAYS"] = int(os.environ["MEDPLUM_AUDIT_RETENTION_DAYS"])
if os.environ.get("MEDPLUM_AUDIT_TOKEN_EVENTS") == "0":
    MEDPLUM_AUTH["AUDIT_TOKEN_EVENTS"] = False

# OpenAPI 3 schema at /api/schema/ and its docs page at /api/schema/docs/ (config/urls.py), public like
# Medplum's. The apps describe their endpoints as data (medplum_auth.contrib.openapi); the committed
# copy is docs/openapi.yaml (regenerate: python manage.py spectacular --file docs/openapi.yaml).
REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
SPECTACULAR_SETTINGS = {
    "TITLE": "django-medplum-auth",
    "DESCRIPTION": "Medplum-compatible OAuth 2.0 / OpenID Connect / SMART-on-FHIR identity provider and FHIR R4 API.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],  # public: no session lookup, no Basic challenge
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "PREPROCESSING_HOOKS": ["medplum_auth.contrib.openapi.drop_described_endpoints"],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "medplum_auth.contrib.openapi.add_described_operations"],
}

CORS_ALLOWED_ORIGINS: list[str] = env_list("CORS_ALLOWED_ORIGINS")
# RFC 9700 §2.6: CORS MUST NOT be supported at the authorization endpoint (nor our sign-in pages).
CORS_URLS_REGEX = r"^/(?!oauth2/(?:authorize|signin|profile|patient|consent)(?:/|$)).*$"
# Browser apps send DPoP proofs (RFC 9449) in a ``DPoP`` header and read the server's ``DPoP-Nonce``.
CORS_ALLOW_HEADERS = (*corsheaders_defaults.default_headers, "dpop")
CORS_EXPOSE_HEADERS = ["DPoP-Nonce", "WWW-Authenticate"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # A database outage is logged once (medplum_auth.database), not once per 503 by django.request.
    "filters": {"quiet_outage": {"()": "medplum_auth.database.QuietOutage"}},
    "loggers": {
        "django.request": {"filters": ["quiet_outage"]},
        "medplum_auth": {"handlers": ["console"], "level": os.environ.get("MEDPLUM_LOG_LEVEL", "INFO")},
        "oauth2_provider": {"handlers": ["console"], "level": "WARNING"},
    },
}
