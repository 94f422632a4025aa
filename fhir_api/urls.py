"""FHIR R4 API and SMART discovery; include at the site root: ``path("", include("fhir_api.urls"))``."""

from django.urls import path, re_path

from . import audit_views, binary, launch, views

app_name = "fhir_api"

TYPE = r"(?P<resource_type>[A-Za-z]{1,64})"
ID = r"(?P<resource_id>[A-Za-z0-9\-.]{1,64})"

urlpatterns = [
    path(".well-known/smart-configuration", views.smart_configuration, name="smart-configuration"),
    path("fhir/R4/.well-known/smart-configuration", views.smart_configuration, name="fhir-smart-configuration"),
    path(".well-known/smart-styles.json", launch.smart_styles, name="smart-styles"),
    path("fhir/R4/.well-known/smart-styles.json", launch.smart_styles, name="fhir-smart-styles"),
    path("fhir/R4/metadata", views.MetadataView.as_view(), name="metadata"),
    path("fhir/R4/AuditEvent", audit_views.AuditEventTypeView.as_view(), name="audit-events"),
    re_path(rf"^fhir/R4/AuditEvent/{ID}$", audit_views.AuditEventInstanceView.as_view(), name="audit-event"),
    re_path(r"^fhir/R4/?$", views.BundleView.as_view(), name="bundle"),
    re_path(rf"^fhir/R4/{TYPE}/\$validate$", views.ValidateView.as_view(), name="validate"),
    re_path(rf"^fhir/R4/{TYPE}/{ID}/\$validate$", views.ValidateView.as_view(), name="validate-instance"),
    re_path(rf"^fhir/R4/Patient/{ID}/\$everything$", views.EverythingView.as_view(), name="everything"),
    path("fhir/R4/Binary", binary.BinaryTypeView.as_view(), name="binaries"),
    re_path(rf"^fhir/R4/Binary/{ID}$", binary.BinaryInstanceView.as_view(), name="binary"),
    re_path(rf"^fhir/R4/{TYPE}$", views.TypeView.as_view(), name="type"),
    re_path(rf"^fhir/R4/{TYPE}/{ID}$", views.InstanceView.as_view(), name="instance"),
    re_path(rf"^fhir/R4/{TYPE}/{ID}/_history$", views.HistoryView.as_view(), name="history"),
    re_path(rf"^fhir/R4/{TYPE}/{ID}/_history/(?P<version_id>[A-Za-z0-9\-.]{{1,64}})$", views.VersionView.as_view(),
            name="vread"),
    re_path(r"^fhir/R4(?:/.*)?$", views.NotFoundView.as_view(), name="not-found"),
]
