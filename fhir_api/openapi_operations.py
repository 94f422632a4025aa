"""OpenAPI description of the FHIR R4 API (``/fhir/R4``) and SMART discovery, as data.

One generic operation per RESTful interaction, the resource type a path parameter (an enum of
the types this server stores); bodies are FHIR resources, errors OperationOutcomes. Read by
:func:`medplum_auth.contrib.openapi.add_described_operations` (a drf-spectacular hook), which also
keeps drf-spectacular from introspecting the DRF views here (they have no serializers).
"""

from __future__ import annotations

from typing import Any

from medplum_auth.contrib.openapi import answer, body, header, path_parameter, query_parameter, ref

from .search_params import RESOURCE_TYPES

FHIR = "FHIR R4"
SMART = "SMART App Launch"
TAGS = [
    {"name": FHIR, "description": "FHIR R4 RESTful API with SMART scopes and access policies enforced."},
    {"name": SMART, "description": "SMART App Launch 2.2 discovery."},
]

FHIR_TYPES = ("application/fhir+json", "application/json")
#: Types with routes of their own (Binary's raw content, AuditEvent read-only) are not in the generic enum.
OWN_ROUTES = ("AuditEvent", "Binary")
SECURITY = [{"bearerAuth": []}]
DPOP = ref("DPoPProof", "parameters")  # medplum_auth's: the proof sent with Authorization: DPoP
VERSION_HEADERS = {"ETag": header('W/"<versionId>"'), "Last-Modified": header("HTTP date")}


def resource(description: str, schema: str = "Resource", status_headers: dict[str, Any] | None = None) -> dict:
    return answer(description, ref(schema), *FHIR_TYPES, headers=status_headers)


def outcome(description: str) -> dict[str, Any]:
    return answer(description, ref("OperationOutcome"), *FHIR_TYPES)


ERRORS: dict[str, dict[str, Any]] = {
    "400": outcome("Invalid request, body or search parameter"),
    "401": outcome("Missing, invalid or expired access token"),
    "403": outcome("The token's scopes or the access policy do not allow it"),
    "404": outcome("Unknown resource type, or no such resource (or not visible)"),
    "405": outcome("Interaction not allowed on this resource type"),
    "406": outcome("No acceptable representation (Accept)"),
    "409": outcome("Conflict (a concurrent change, an id already used)"),
    "410": outcome("Deleted"),
    "412": outcome("If-Match does not match the current version, or a conditional request matched several"),
    "411": outcome("A chunked body on a WSGI server that does not de-chunk it (send Content-Length)"),
    "413": outcome("Body larger than its limit (FHIR_RESOURCE_MAX_BYTES, FHIR_BUNDLE_MAX_BYTES, BINARY_MAX_BYTES)"),
    "415": outcome("Unsupported Content-Type"),
    "422": outcome("The resource is not valid"),
    "429": outcome("Too many requests"),
}


def errors(*codes: str) -> dict[str, Any]:
    """The error answers every interaction may give, and ``codes``, as references to ``FhirError<code>``."""
    return {code: ref(f"FhirError{code}", "responses") for code in ("400", "401", "403", "404", "406", "429", *codes)}


def interaction(summary: str, responses: dict[str, Any], *, request: dict[str, Any] | None = None,
                parameters: list[dict[str, Any]] | None = None, operation_id: str = "") -> dict[str, Any]:
    operation: dict[str, Any] = {"tags": [FHIR], "summary": summary, "security": SECURITY, "responses": responses,
                                 "parameters": [*(parameters or []), DPOP]}
    if operation_id:
        operation["operationId"] = operation_id
    if request is not None:
        operation["requestBody"] = request
    return operation


TYPE_PARAMETER = path_parameter("resource_type", "A FHIR R4 resource type", type="string",
                      enum=[t for t in RESOURCE_TYPES if t not in OWN_ROUTES])
ID_PARAMETER = path_parameter("resource_id", "The resource's logical id", type="string",
                              pattern=r"^[A-Za-z0-9\-.]{1,64}$")
VERSION = path_parameter("version_id", "A version id", type="string", pattern=r"^[A-Za-z0-9\-.]{1,64}$")
TYPE, ID = ref("ResourceType", "parameters"), ref("ResourceId", "parameters")
SEARCH = [query_parameter(name, description, **schema) for name, description, schema in (
    ("_count", "Page size", {"type": "integer", "minimum": 0}),
    ("_offset", "Offset of the page", {"type": "integer", "minimum": 0}),
    ("_sort", "Sort order (search parameters, `-` for descending)", {}),
    ("_id", "Logical ids, comma separated", {}),
    ("_summary", "count, or true", {}),
    ("_total", "none, estimate or accurate", {}),
)]
RESOURCE_BODY = body(ref("Resource"), *FHIR_TYPES)
IF_MATCH = {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
            "description": 'W/"<versionId>": update only that version (optimistic locking)'}
BINARY_CONTENT = {"description": "Raw content of any type (its Content-Type is kept; empty is an empty file), "
                                 "or a FHIR Binary resource", "required": False,
                  "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}

PATHS: dict[str, Any] = {
    "/fhir/R4/metadata": {"get": {
        "tags": [FHIR], "summary": "CapabilityStatement", "security": [{}],
        "responses": {"200": resource("The server's CapabilityStatement", "CapabilityStatement")}}},
    "/fhir/R4": {"post": interaction(
        "Batch or transaction Bundle",
        {"200": resource("The response Bundle", "Bundle"), **errors("409", "411", "412", "413", "415")},
        request=body(ref("Bundle"), *FHIR_TYPES), operation_id="fhir_batch")},
    "/fhir/R4/{resource_type}": {
        "parameters": [TYPE],
        "get": interaction("Search", {"200": resource("A searchset Bundle", "Bundle")} | errors(),
                           parameters=SEARCH, operation_id="fhir_search"),
        "post": interaction("Create", {"201": resource("Created", status_headers={
            "Location": header("The new version's URL"), **VERSION_HEADERS}),
            "200": resource("Conditional create (If-None-Exist) matched an existing resource"),
            **errors("409", "412", "411", "413", "415", "422")}, request=RESOURCE_BODY, operation_id="fhir_create"),
        "put": interaction("Conditional update", {
            "200": resource("Updated", status_headers=VERSION_HEADERS), "201": resource("Created"),
            **errors("409", "412", "411", "413", "415", "422")}, request=RESOURCE_BODY, parameters=SEARCH,
            operation_id="fhir_conditional_update"),
        "delete": interaction("Conditional delete", {"200": outcome("Deleted"), "204": answer("Deleted"),
                                                     **errors("412")},
                              parameters=SEARCH, operation_id="fhir_conditional_delete"),
    },
    "/fhir/R4/{resource_type}/{resource_id}": {
        "parameters": [TYPE, ID],
        "get": interaction("Read", {"200": resource("The resource", status_headers=VERSION_HEADERS),
                                    "304": answer("Not modified (If-None-Match)"), **errors("410")},
                           operation_id="fhir_read"),
        "put": interaction("Update (or create with this id)", {
            "200": resource("Updated", status_headers=VERSION_HEADERS), "201": resource("Created"),
            **errors("409", "412", "411", "413", "415", "422")}, request=RESOURCE_BODY, parameters=[IF_MATCH],
            operation_id="fhir_update"),
        "patch": interaction("JSON Patch", {"200": resource("Patched", status_headers=VERSION_HEADERS),
                                            **errors("409", "410", "412", "411", "413", "415", "422")},
                             request=body({"type": "array", "items": ref("JsonPatchOperation")},
                                          "application/json-patch+json"), parameters=[IF_MATCH],
                             operation_id="fhir_patch"),
        "delete": interaction("Delete", {"200": outcome("Deleted"), "204": answer("Deleted"),
                                         **errors("409", "412")}, parameters=[IF_MATCH], operation_id="fhir_delete"),
    },
    "/fhir/R4/{resource_type}/{resource_id}/_history": {
        "parameters": [TYPE, ID],
        "get": interaction("History of a resource", {"200": resource("A history Bundle", "Bundle"), **errors("410")},
                           parameters=SEARCH[:2], operation_id="fhir_history")},
    "/fhir/R4/{resource_type}/{resource_id}/_history/{version_id}": {
        "parameters": [TYPE, ID, VERSION],
        "get": interaction("Read a version (vread)", {"200": resource("That version", status_headers=VERSION_HEADERS),
                                                      **errors("410")}, operation_id="fhir_vread")},
    "/fhir/R4/{resource_type}/$validate": {
        "parameters": [TYPE],
        "post": interaction("$validate a resource", {"200": outcome("The validation's OperationOutcome"),
                                                     **errors("411", "413", "415", "422")},
                            request=body(ref("Resource"), *FHIR_TYPES), operation_id="fhir_validate",
                            parameters=[query_parameter("mode", "create, update or delete")])},
    "/fhir/R4/{resource_type}/{resource_id}/$validate": {
        "parameters": [TYPE, ID],
        "post": interaction("$validate against an existing resource", {
            "200": outcome("The validation's OperationOutcome"), **errors("410", "411", "413", "415", "422")},
            request=body(ref("Resource"), *FHIR_TYPES, required=False), operation_id="fhir_validate_instance",
            parameters=[query_parameter("mode", "create, update or delete")])},
    "/fhir/R4/Patient/{resource_id}/$everything": {
        "parameters": [ID],
        "get": interaction("Patient $everything", {"200": resource("A searchset Bundle of the compartment", "Bundle"),
                                                   **errors("410")}, parameters=SEARCH[:2],
                           operation_id="fhir_patient_everything")},
    "/fhir/R4/Binary": {
        "get": interaction("Search Binary resources", {"200": resource("A searchset Bundle", "Bundle"), **errors()},
                           parameters=SEARCH, operation_id="fhir_binary_search"),
        "post": interaction("Upload a Binary", {"201": resource(
            "The Binary resource (without its data)",
            status_headers={"Location": header("The new version's URL"), **VERSION_HEADERS}),
            **errors("411", "413", "415", "422")},
            request=BINARY_CONTENT, operation_id="fhir_binary_create")},
    "/fhir/R4/Binary/{resource_id}": {
        "parameters": [ID],
        "get": interaction("Download a Binary (raw content, or FHIR JSON when the Accept header asks for it)", {
            "200": {"description": "The content with its stored Content-Type, or the Binary resource",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}, **errors("410")},
            operation_id="fhir_binary_read"),
        "put": interaction("Replace a Binary's content", {"200": resource("The Binary resource", status_headers=
                                                                          VERSION_HEADERS),
                                                          **errors("409", "412", "411", "413", "415", "422")},
                           request=BINARY_CONTENT, parameters=[IF_MATCH], operation_id="fhir_binary_update"),
        "delete": interaction("Delete a Binary", {"200": outcome("Deleted"), "204": answer("Deleted"),
                                                  **errors("409", "412")}, operation_id="fhir_binary_delete")},
    "/fhir/R4/AuditEvent": {"get": interaction(
        "Search the project's AuditEvents (project admins and system tokens)",
        {"200": resource("A searchset Bundle", "Bundle"), **errors()}, parameters=SEARCH,
        operation_id="fhir_audit_event_search")},
    "/fhir/R4/AuditEvent/{resource_id}": {"parameters": [ID], "get": interaction(
        "Read an AuditEvent", {"200": resource("The AuditEvent"), **errors()}, operation_id="fhir_audit_event_read")},
}

SMART_CONFIGURATION = {"get": {"tags": [SMART], "summary": "SMART configuration (SMART App Launch 2.2 §2.1)",
                               "security": [{}],
                               "responses": {"200": answer("The SMART configuration", ref("SmartConfiguration"))}}}
SMART_STYLES = {"get": {"tags": [SMART], "summary": "SMART style for launched apps (smart_style_url)",
                        "security": [{}],
                        "responses": {"200": answer("Styles", {"type": "object", "additionalProperties": True})}}}
PATHS.update({
    "/.well-known/smart-configuration": SMART_CONFIGURATION,
    "/fhir/R4/.well-known/smart-configuration": {"get": {**SMART_CONFIGURATION["get"],
                                                         "operationId": "fhir_smart_configuration"}},
    "/.well-known/smart-styles.json": SMART_STYLES,
    "/fhir/R4/.well-known/smart-styles.json": {"get": {**SMART_STYLES["get"], "operationId": "fhir_smart_styles"}},
})

OPEN_RESOURCE = {"type": "object", "required": ["resourceType"], "additionalProperties": True,
                 "properties": {"resourceType": {"type": "string"}, "id": {"type": "string"},
                                "meta": {"type": "object", "additionalProperties": True}}}

COMPONENTS: dict[str, Any] = {
  "parameters": {"ResourceType": TYPE_PARAMETER, "ResourceId": ID_PARAMETER},
  "responses": {f"FhirError{code}": response for code, response in ERRORS.items()},
  "schemas": {
    "Resource": {**OPEN_RESOURCE, "description": "Any FHIR R4 resource (validated by the server, fhir.resources)"},
    "Bundle": {**OPEN_RESOURCE, "description": "A FHIR Bundle", "properties": {
        **OPEN_RESOURCE["properties"], "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": {"type": "string"}, "total": {"type": "integer"},
        "entry": {"type": "array", "items": {"type": "object", "additionalProperties": True}}}},
    "CapabilityStatement": {**OPEN_RESOURCE, "properties": {
        **OPEN_RESOURCE["properties"], "resourceType": {"type": "string", "enum": ["CapabilityStatement"]}}},
    "JsonPatchOperation": {"type": "object", "required": ["op", "path"], "properties": {
        "op": {"type": "string", "enum": ["add", "remove", "replace", "move", "copy", "test"]},
        "path": {"type": "string"}, "from": {"type": "string"}, "value": {}}},
    "SmartConfiguration": {"type": "object", "additionalProperties": True,
                           "required": ["authorization_endpoint", "token_endpoint", "capabilities"],
                           "properties": {"issuer": {"type": "string"}, "authorization_endpoint": {"type": "string"},
                                          "token_endpoint": {"type": "string"},
                                          "capabilities": {"type": "array", "items": {"type": "string"}}}},
}}
