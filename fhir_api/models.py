"""FHIR resources per project: the current version, every version, and the search index.

Every query starts from ``project`` and ``resource_type`` (the leading columns of every index),
so the cost of a search does not grow with other projects' data; patient-scoped searches use
the ``patient`` compartment column.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from medplum_auth.models import Project


class Resource(models.Model):
    """The current version of one resource; ``content`` is the JSON served on read."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False,
                                verbose_name=_("project"))
    resource_type = models.CharField(_("resource type"), max_length=64)
    resource_id = models.CharField(_("id"), max_length=64)
    version_id = models.PositiveIntegerField(_("version"), default=1)
    last_updated = models.DateTimeField(_("last updated"))
    deleted = models.BooleanField(_("deleted"), default=False)
    content = models.JSONField(_("content"))
    patient = models.CharField(_("patient compartment"), max_length=128, blank=True, default="",
                               help_text=_("Patient/<id> the resource belongs to (for a Patient: itself)."))

    class Meta:
        verbose_name = _("FHIR resource")
        constraints = [
            models.UniqueConstraint(fields=["project", "resource_type", "resource_id"],
                                    name="fhir_resource_unique_id"),
        ]
        indexes = [
            models.Index(fields=["project", "resource_type", "patient"], name="fhir_resource_patient"),
            models.Index(fields=["project", "resource_type", "last_updated"], name="fhir_resource_updated"),
        ]

    def __str__(self) -> str:
        return self.reference

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


class ResourceVersion(models.Model):
    """One version of a resource, kept for ``_history`` and vread (a delete is a version too)."""

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="versions", db_index=False)
    version_id = models.PositiveIntegerField(_("version"))
    last_updated = models.DateTimeField(_("last updated"))
    deleted = models.BooleanField(_("deleted"), default=False)
    content = models.JSONField(_("content"), null=True, blank=True)

    class Meta:
        verbose_name = _("FHIR resource version")
        constraints = [
            models.UniqueConstraint(fields=["resource", "version_id"], name="fhir_version_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.resource}/_history/{self.version_id}"


class SearchIndex(models.Model):
    """One search parameter value of a resource's current version (see ``search_params``)."""

    resource = models.ForeignKey(Resource, on_delete=models.CASCADE, related_name="index_entries")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+", db_index=False)
    resource_type = models.CharField(max_length=64)
    name = models.CharField(max_length=64)
    value = models.CharField(max_length=1024)
    number = models.FloatField(null=True, blank=True,
                               help_text=_("number, quantity and composite parameters: the numeric value."))

    class Meta:
        verbose_name = _("FHIR search index entry")
        verbose_name_plural = _("FHIR search index entries")
        indexes = [
            models.Index(fields=["project", "resource_type", "name", "value"], name="fhir_search_value"),
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
