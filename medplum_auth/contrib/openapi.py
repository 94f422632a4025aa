"""OpenAPI 3 descriptions of the apps' endpoints, as data, merged into drf-spectacular's schema.

drf-spectacular introspects DRF views and their serializers. Our OAuth, OIDC and auth API
endpoints are plain Django views (form bodies in, RFC 6749 error objects or OperationOutcomes
out), and the FHIR views are DRF views without serializers (any resource type, any FHIR JSON):
introspection would give empty or wrong operations, and schema decorators on the views would
mix a documentation tool into protocol code. So each installed app may ship an ``openapi_operations``
module with two dicts, ``PATHS`` (OpenAPI path items) and ``COMPONENTS`` (schemas, responses,
parameters, security schemes), and the site names the two hooks below in its
``SPECTACULAR_SETTINGS``::

    "PREPROCESSING_HOOKS": ["medplum_auth.contrib.openapi.drop_described_endpoints"],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "medplum_auth.contrib.openapi.add_described_operations"],

The modules are found through the app registry (as the admin's ``autodiscover`` finds
``admin`` modules), so medplum_auth imports neither drf-spectacular nor the other apps, and a
site that leaves out an app leaves out its operations. The helpers below keep the data short.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import import_module
from typing import Any

from django.apps import apps
from django.utils.module_loading import module_has_submodule

MODULE = "openapi_operations"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def described_apps() -> Iterator[tuple[str, Any]]:
    """``(app package name, its openapi module)`` of every installed app that ships one."""
    for config in apps.get_app_configs():
        if module_has_submodule(config.module, MODULE):
            yield config.name, import_module(f"{config.name}.{MODULE}")


def drop_described_endpoints(endpoints: list[tuple[str, str, str, Any]], **kwargs: Any) -> list[Any]:
    """drf-spectacular preprocessing hook: an app that describes its operations owns its views,
    so its DRF views are not introspected as well (they have no serializers to read)."""
    owners = tuple(f"{name}." for name, _ in described_apps())
    return [endpoint for endpoint in endpoints if not getattr(endpoint[3], "__module__", "").startswith(owners)]


def add_described_operations(result: dict[str, Any], generator: Any = None, request: Any = None,
                             public: bool = True, **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the apps' ``PATHS`` and ``COMPONENTS``, paths sorted."""
    paths = dict(result.get("paths") or {})
    components = result.setdefault("components", {})
    tags: dict[str, dict[str, str]] = {tag["name"]: tag for tag in result.get("tags") or []}
    for name, module in described_apps():
        for path in module.PATHS:
            if path in paths:
                raise ValueError(f"{name}.{MODULE} describes {path}, which another app describes too")
        for path, item in module.PATHS.items():
            paths[path] = operations(path, item)
        for section, entries in module.COMPONENTS.items():
            components.setdefault(section, {}).update(entries)
        for tag in getattr(module, "TAGS", []):
            tags.setdefault(tag["name"], tag)
    result["paths"] = dict(sorted(paths.items()))
    if tags:
        result["tags"] = list(tags.values())
    return result


def operations(path: str, item: dict[str, Any]) -> dict[str, Any]:
    """A path item as drf-spectacular's output keeps them: methods only (the item's ``parameters``
    go into each operation) and every operation with an ``operationId``."""
    shared = item.get("parameters", [])
    return {method: {"operationId": operation_id(path, method), **operation,
                     **({"parameters": [*shared, *operation.get("parameters", [])]} if shared else {})}
            for method, operation in item.items() if method in METHODS}


def operation_id(path: str, method: str) -> str:
    """drf-spectacular's style of id (``oauth2_token_post``), unless the operation names its own."""
    return f"{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_')}_{method}"


# --- helpers for the apps' PATHS ------------------------------------------------------------------

def ref(name: str, section: str = "schemas") -> dict[str, str]:
    return {"$ref": f"#/components/{section}/{name}"}


def content(schema: dict[str, Any], *media_types: str) -> dict[str, Any]:
    """A ``content`` map giving ``schema`` for each media type (``application/json`` if none)."""
    return {media_type: {"schema": schema} for media_type in media_types or (JSON,)}


def body(schema: dict[str, Any], *media_types: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": content(schema, *media_types)}


def answer(description: str, schema: dict[str, Any] | None = None, *media_types: str,
           headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A response: ``description``, and ``schema`` as each media type when there is a body."""
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = content(schema, *media_types)
    if headers:
        response["headers"] = headers
    return response


def header(description: str, required: bool = True, **schema: Any) -> dict[str, Any]:
    """A response header; ``required`` (schemathesis checks that required ones are sent)."""
    return {"description": description, "required": required, "schema": schema or {"type": "string"}}


def path_parameter(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


def query_parameter(name: str, description: str, required: bool = False, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


def strings(*names: str, required: tuple[str, ...] = (), **more: Any) -> dict[str, Any]:
    """An object schema of string properties ``names`` (``more``: other properties by schema)."""
    schema: dict[str, Any] = {"type": "object",
                              "properties": {**{name: {"type": "string"} for name in names}, **more}}
    if required:
        schema["required"] = list(required)
    return schema
