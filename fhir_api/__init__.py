"""FHIR R4 resource server on DRF. Endpoints arrive with the FHIR API issue."""
