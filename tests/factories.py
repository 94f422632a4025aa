"""factory-boy factories for the identity model.

Clients are built through ``services.create_client`` semantics: the plaintext secret is kept
on the instance as ``plaintext_secret`` for the test's use and only its digest is stored. The
secret is made from a literal and its digest is written out here from the documented stored
format, not through ``medplum_auth.secrets``: a change of that format (salt, key, algorithm)
then locks the factories' clients out as it would lock out every stored client in production.
"""

from __future__ import annotations

import hashlib
import hmac

import factory
from django.conf import settings
from django.contrib.auth import get_user_model

from medplum_auth.models import AccessPolicy, ClientApplication, Project, ProjectMembership

DEFAULT_PASSWORD = "correct horse battery staple"


def client_secret_digest(secret: str, key: str | None = None) -> str:
    """``hmac-sha256$`` + HMAC-SHA256 of ``secret`` under SHA-256(``medplum_auth.client-secret`` +
    the key): the key is ``CLIENT_SECRET_DIGEST_KEY`` when set, else ``SECRET_KEY``."""
    if key is None:
        key = settings.MEDPLUM_AUTH.get("CLIENT_SECRET_DIGEST_KEY") or settings.SECRET_KEY
    digest_key = hashlib.sha256(b"medplum_auth.client-secret" + key.encode()).digest()
    return "hmac-sha256$" + hmac.new(digest_key, secret.encode(), hashlib.sha256).hexdigest()


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}@example.org")
    email = factory.SelfAttribute("username")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    password = factory.PostGenerationMethodCall("set_password", DEFAULT_PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):  # noqa: N805
        if create:
            obj.save()


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")


class AccessPolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AccessPolicy

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"Policy {n}")
    resources = factory.LazyFunction(lambda: [
        {"resourceType": "Patient", "criteria": "Patient?_id=%patient.id", "interaction": ["read", "search"]},
    ])


class ClientApplicationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ClientApplication

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"Client {n}")
    redirect_uris = "https://app.example.org/callback"
    client_type = ClientApplication.CLIENT_CONFIDENTIAL
    # 64 lowercase hex characters, like a generated secret, but from a literal.
    plaintext_secret = factory.Sequence(lambda n: hashlib.sha256(f"factory-client-secret-{n}".encode()).hexdigest())
    client_secret = factory.LazyAttribute(lambda o: client_secret_digest(o.plaintext_secret))

    class Params:
        public = factory.Trait(client_type=ClientApplication.CLIENT_PUBLIC, plaintext_secret="", client_secret="")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        plaintext = kwargs.pop("plaintext_secret")
        obj = super()._create(model_class, *args, **kwargs)
        obj.plaintext_secret = plaintext
        return obj

    @classmethod
    def _build(cls, model_class, *args, **kwargs):
        plaintext = kwargs.pop("plaintext_secret")
        obj = super()._build(model_class, *args, **kwargs)
        obj.plaintext_secret = plaintext
        return obj


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProjectMembership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    profile_type = "Patient"
    profile_display = factory.LazyAttribute(lambda o: f"{o.user.first_name} {o.user.last_name}")
