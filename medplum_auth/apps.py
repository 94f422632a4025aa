from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _ensure_signing_key(sender: AppConfig, using: str = "default", **kwargs: object) -> None:
    """After ``migrate`` (and ``flush``), make sure tokens can be signed."""
    from .conf import auth_settings
    from .models import SigningKey
    from .services import rotate_signing_keys

    if auth_settings.AUTO_CREATE_SIGNING_KEY and not SigningKey.objects.using(using).filter(
        status=SigningKey.Status.ACTIVE
    ).exists():
        rotate_signing_keys()


class MedplumAuthConfig(AppConfig):
    name = "medplum_auth"
    verbose_name = "Medplum identity provider"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_delete, post_save

        from . import checks  # noqa: F401 - registers the system checks
        from .database import outage
        from .tokens import clear_cache

        connection_created.connect(outage.connected, dispatch_uid="medplum_auth.database_outage")
        post_migrate.connect(_ensure_signing_key, sender=self, dispatch_uid="medplum_auth.ensure_signing_key")
        signing_key = self.get_model("SigningKey")
        post_save.connect(clear_cache, sender=signing_key, dispatch_uid="medplum_auth.clear_key_cache")
        post_delete.connect(clear_cache, sender=signing_key, dispatch_uid="medplum_auth.clear_key_cache_delete")
