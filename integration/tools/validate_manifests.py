#!/usr/bin/env python3
"""Validate Kubernetes manifests against the real schemas of the versions the suite pins.

Custom resources are checked against the CRDs shipped in the upstream projects' Go modules
(Envoy Gateway, Gateway API, KEDA, cert-manager, prometheus-operator), converted to JSON Schema
the way kubeconform's openapi2jsonschema does in strict mode: objects that declare properties
reject unknown fields unless the CRD preserves them, `x-kubernetes-int-or-string` accepts both,
`nullable` accepts null. Built-in kinds are checked with kubernetes-validate (strict) against
the Kubernetes version given. Validation is by the `jsonschema` library; CEL rules
(`x-kubernetes-validations`) are not evaluated here.

usage: validate_manifests.py --crds DIR... --k8s-version 1.34.0 PATH...
Prints one line per problem and exits 1 if there is any.
"""

import argparse
import copy
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml


def strict(schema):
    """kubeconform-style strict conversion of an OpenAPI v3 CRD schema."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else out["type"] + ["null"]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    for key in list(out):
        if key.startswith("x-kubernetes-"):
            out.pop(key)
    return out


def load_crds(dirs):
    """{(apiVersion, kind): schema} from every CRD YAML under dirs."""
    schemas = {}
    for d in dirs:
        for path in sorted(pathlib.Path(d).rglob("*.yaml")):
            try:
                docs = list(yaml.safe_load_all(path.read_text()))
            except yaml.YAMLError:
                continue  # templated chart files
            for doc in docs:
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for version in spec.get("versions", []):
                    schema = version.get("schema", {}).get("openAPIV3Schema")
                    if schema is None:
                        continue
                    converted = strict(copy.deepcopy(schema))
                    props = converted.setdefault("properties", {})
                    props.setdefault("apiVersion", {"type": "string"})
                    props.setdefault("kind", {"type": "string"})
                    props["metadata"] = {"type": "object"}
                    schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = converted
    return schemas


def manifest_files(paths):
    for p in paths:
        p = pathlib.Path(p)
        files = sorted(p.rglob("*.y*ml")) if p.is_dir() else [p]
        for f in files:
            if f.name in ("kustomization.yaml", "kustomization.yml"):
                continue
            yield f


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--crds", action="append", default=[])
    parser.add_argument("--k8s-version", required=True)
    parser.add_argument("--unschematized", action="append", default=[],
                        help="apiVersion/kind with no published schema (reported, not validated)")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()

    crds = load_crds(args.crds)
    problems = []
    checked = 0
    for path in manifest_files(args.paths):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as e:
            problems.append(f"{path}: not YAML: {e}")
            continue
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            where = f"{path}[{i}] {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                problems.append(f"{where}: not a Kubernetes object")
                continue
            key = (doc["apiVersion"], doc["kind"])
            if f"{key[0]}/{key[1]}" in args.unschematized:
                print(f"{where}: not validated here: {key[0]} {key[1]} has no published schema", file=sys.stderr)
                continue
            checked += 1
            if key in crds:
                validator = jsonschema.Draft7Validator(crds[key])
                for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
                    field = ".".join(str(p) for p in err.absolute_path) or "(root)"
                    problems.append(f"{where}: {field}: {err.message[:300]}")
            elif "." in doc["apiVersion"].split("/")[0] and not doc["apiVersion"].startswith(
                ("apps/", "batch/", "networking.k8s.io/", "rbac.authorization.k8s.io/", "policy/", "autoscaling/")
            ):
                problems.append(f"{where}: no schema for {key[0]} {key[1]} (add its CRD source)")
            else:
                try:
                    kubernetes_validate.validate(doc, args.k8s_version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    field = ".".join(str(p) for p in e.path) or "(root)"
                    problems.append(f"{where}: {field}: {e.message[:300]}")
                except kubernetes_validate.SchemaNotFoundError as e:
                    problems.append(f"{where}: {e}")
    for p in problems:
        print(p)
    print(f"{checked} objects checked against {len(crds)} CRD schemas and Kubernetes {args.k8s_version}; {len(problems)} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
