from django.apps import AppConfig


class FhirApiConfig(AppConfig):
    name = "fhir_api"
    verbose_name = "FHIR API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from medplum_auth.launch import register_patient_search
        from medplum_auth.signals import demo_seeded, member_invited

        from .checks import check_binary_settings, check_body_limits
        from .demo import seed_demo_data
        from .profiles import create_profile_resource

        member_invited.connect(create_profile_resource, dispatch_uid="fhir_api.create_profile_resource")
        demo_seeded.connect(seed_demo_data, dispatch_uid="fhir_api.seed_demo_data")
        # The standalone-launch patient picker searches this app's Patients (MEDPLUM_AUTH["PATIENT_SEARCH"]
        # overrides it).
        register_patient_search("fhir_api.launch.search_patients")
        checks.register(check_binary_settings)
        checks.register(check_body_limits)
