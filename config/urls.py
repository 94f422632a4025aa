from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    # The FHIR API first: the busiest paths are then resolved without trying the others.
    path("", include("fhir_api.urls")),
    path("", include("medplum_auth.urls")),
    path("admin/", admin.site.urls),
    path("project-admin/", include("project_admin.urls")),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
