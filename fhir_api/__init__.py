"""FHIR R4 resource server on DRF (`/fhir/R4`), enforcing SMART scopes and access policies."""
