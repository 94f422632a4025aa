from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("medplum_auth.urls")),
    path("", include("fhir_api.urls")),
    path("project-admin/", include("project_admin.urls")),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
