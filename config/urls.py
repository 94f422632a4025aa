from django.contrib import admin
from django.urls import include, path
from django.views.decorators.http import require_safe
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from medplum_auth.views.account import AccountSignInView

urlpatterns = [
    # The FHIR API first: the busiest paths are then resolved without trying the others.
    path("", include("fhir_api.urls")),
    path("", include("medplum_auth.urls")),
    # The Django admin signs in through medplum_auth's sign-in, so it asks for the second factor
    # (and is throttled and audited) like every other sign-in page.
    path("admin/login/", AccountSignInView.as_view(), name="admin-login"),
    path("admin/", admin.site.urls),
    path("project-admin/", include("project_admin.urls")),
    # The OpenAPI schema (YAML, or JSON with ?format=json) and its docs page: public, GET and HEAD
    # only (require_safe: DRF answered OPTIONS on the docs page with a 500, its HTML renderer having
    # no template for the metadata; CORS preflights are answered by the middleware before this).
    path("api/schema/", require_safe(SpectacularAPIView.as_view()), name="api-schema"),
    path("api/schema/docs/", require_safe(SpectacularSwaggerView.as_view(url_name="api-schema")),
         name="api-schema-docs"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
