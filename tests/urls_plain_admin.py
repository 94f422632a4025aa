"""A site that mounts the Django admin with its own sign-in (for the W013 system check test)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("medplum_auth.urls")),
    path("admin/", admin.site.urls),
]
