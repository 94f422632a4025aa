"""The baseline of ``oauth_bench.py`` and ``fhir_bench.py``: a bare Django project with one ``JsonResponse`` view.

No installed apps, no middleware, no database: what one Django request costs under the same
gunicorn (same worker count, same worker class) before any of our code runs. Served as
``bench.bare_app:application`` from the repository root.
"""

from __future__ import annotations

import os

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.environ.get("SECRET_KEY", "bench-bare-app-" + "x" * 40),
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        DATABASES={},
        USE_TZ=True,
    )

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def bare(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [path("", bare)]

application = get_wsgi_application()
