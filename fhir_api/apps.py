from django.apps import AppConfig


class FhirApiConfig(AppConfig):
    name = "fhir_api"
    verbose_name = "FHIR API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from medplum_auth.signals import member_invited

        from .profiles import create_profile_resource

        member_invited.connect(create_profile_resource, dispatch_uid="fhir_api.create_profile_resource")
