"""Medplum-compatible OAuth2 / OpenID Connect / SMART-on-FHIR identity provider for Django."""

__version__ = "0.1.0"
