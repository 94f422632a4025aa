"""Settings of the e2e tests' gunicorn server: the test settings on the test session's database.

``MEDPLUM_E2E_DATABASE`` is the JSON of the session's ``connection.settings_dict`` (the test
database pytest-django created), so the server and the tests see the same rows. The issuer comes
from ``MEDPLUM_ISSUER`` as in production. Static files are served from the apps (no collectstatic),
so the screenshots show the real styling. ``MEDPLUM_E2E_REDIS_URL`` gives the instances a shared
Redis cache (throttle counters), as ``REDIS_URL`` does for the example site. ``MEDPLUM_E2E_AUTH``
(JSON) overrides ``MEDPLUM_AUTH`` settings (the schemathesis run lifts the failure throttles).
"""

import json
import os

from tests.settings import *  # noqa: F403

DATABASES = {"default": json.loads(os.environ["MEDPLUM_E2E_DATABASE"])}
WHITENOISE_USE_FINDERS = True
# DPoP clients (openid-client) must handle server nonces (RFC 9449 §8, §9); no other e2e client uses DPoP.
MEDPLUM_AUTH = {**MEDPLUM_AUTH, "DPOP_NONCE_REQUIRED": True}  # noqa: F405
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
if os.environ.get("MEDPLUM_E2E_REDIS_URL"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": os.environ["MEDPLUM_E2E_REDIS_URL"]}}
if os.environ.get("MEDPLUM_E2E_AUTH"):
    MEDPLUM_AUTH = {**MEDPLUM_AUTH, **json.loads(os.environ["MEDPLUM_E2E_AUTH"])}  # noqa: F405
