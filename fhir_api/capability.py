"""``/fhir/R4/metadata`` (CapabilityStatement) and ``.well-known/smart-configuration``.

Both advertise only what this server does now (SMART App Launch 2.2 §2.1: a capability is a
promise). ``context-standalone-encounter`` is left out: the standalone flow has no encounter picker.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.utils import timezone

from medplum_auth.conf import auth_settings

from .search_params import SEARCH_PARAMETERS

FHIR_VERSION = "4.0.1"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"

SMART_CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-banner",
    "context-style",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
]
SMART_SCOPES = [
    "openid", "fhirUser", "profile", "email", "launch", "launch/patient", "launch/encounter", "offline_access",
    "patient/*.rs", "patient/*.cruds", "user/*.rs", "user/*.cruds", "system/*.rs", "system/*.cruds",
]
INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "create", "search-type"]


def _endpoints() -> dict[str, str]:
    issuer = auth_settings.ISSUER.rstrip("/")
    return {
        "authorize": f"{issuer}/oauth2/authorize",
        "token": f"{issuer}/oauth2/token",
        "introspect": f"{issuer}/oauth2/introspect",
        "revoke": f"{issuer}/oauth2/revoke",
    }


def smart_configuration() -> dict[str, Any]:
    """SMART App Launch 2.2 §2.1 ``.well-known/smart-configuration``."""
    issuer = auth_settings.ISSUER.rstrip("/")
    endpoints = _endpoints()
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "authorization_endpoint": endpoints["authorize"],
        "token_endpoint": endpoints["token"],
        "introspection_endpoint": endpoints["introspect"],
        "revocation_endpoint": endpoints["revoke"],
        "userinfo_endpoint": f"{issuer}/oauth2/userinfo",
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt",
                                                  "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "RS384", "ES256", "ES384"],
        "scopes_supported": SMART_SCOPES,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": SMART_CAPABILITIES,
    }


def capability_statement() -> dict[str, Any]:
    """FHIR R4 CapabilityStatement with the SMART ``oauth-uris`` extension (SMART 2.2 §2.2)."""
    endpoints = _endpoints()
    resources = [*_resources()]  # the dicts are shared: read-only
    from .audit_events import SEARCH_PARAMS as AUDIT_SEARCH_PARAMS

    resources.append({  # read-only, for project admins: built from medplum_auth's security events
        "type": "AuditEvent",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "versioning": "no-version",
        "readHistory": False,
        "updateCreate": False,
        "conditionalCreate": False,
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchInclude": [],
        "searchRevInclude": [],
        "searchParam": [{"name": name, "type": kind} for name, kind in AUDIT_SEARCH_PARAMS.items()],
    })
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": timezone.now().date().isoformat(),
        "kind": "instance",
        "software": {"name": "django-medplum-auth fhir_api"},
        "implementation": {"description": "FHIR R4 API", "url": auth_settings.fhir_base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": {
                "service": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR",
                }]}],
                "extension": [{
                    "url": OAUTH_URIS,
                    "extension": [{"url": name, "valueUri": uri} for name, uri in endpoints.items()],
                }],
            },
            "resource": resources,
            "interaction": [{"code": "batch"}, {"code": "transaction"}],
            "operation": [{"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"},
                          {"name": "everything",
                           "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}],
        }],
    }


@cache
def _resources() -> list[dict[str, Any]]:
    """Every stored type (the R4 data) with its interactions and parameters; the same for every
    request, so built once (about 130 types, 2,000 parameters)."""
    revincludes: dict[str, list[str]] = {}
    for source, source_params in SEARCH_PARAMETERS.items():
        for p in source_params.values():
            if p.type == "reference":
                for target in (p.target,) if p.target else p.targets or SEARCH_PARAMETERS:
                    revincludes.setdefault(target, []).append(f"{source}:{p.name}")
    resources = []
    for resource_type, params in SEARCH_PARAMETERS.items():
        search_params = [{"name": "_id", "type": "token"}, {"name": "_lastUpdated", "type": "date"}]
        search_params += [{"name": p.name, "type": p.type} for p in params.values()]
        resources.append({
            "type": resource_type,
            "interaction": [{"code": code} for code in INTERACTIONS],
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": False,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "searchInclude": [f"{resource_type}:{p.name}" for p in params.values() if p.type == "reference"],
            "searchRevInclude": revincludes.get(resource_type, []),
            "searchParam": search_params,
        })
    return resources
