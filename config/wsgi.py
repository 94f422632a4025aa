"""WSGI entry point: ``medplum_auth.wsgi`` serves the token, userinfo, discovery and FHIR paths
through the API middleware stack (no sessions or CSRF), every other path through ``MIDDLEWARE``."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from medplum_auth.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
