"""The structural OpenAPI v3 schema of SpotPolicy, derived from the pydantic models.

Pydantic's JSON Schema is rewritten into what a Kubernetes CRD accepts: ``$ref``
inlined, ``anyOf [X, null]`` collapsed to ``X`` (unset fields are simply absent),
``title`` and ``additionalProperties: false`` dropped (the API server prunes or,
with strict field validation, refuses unknown fields), and ``default`` moved
into the description (defaults are applied by the models, so objects read back
exactly as written). :mod:`crdgen` and :mod:`docgen` both use :func:`root`.
"""

from __future__ import annotations

import json
from typing import Any

from spotfleet_operator.api import base, names, spec, status

_DROP = {"title", "$defs", "default"}


def _merge(outer: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any]:
    """``inner`` with ``outer``'s annotations (description, extras) on top."""
    out = dict(inner)
    for k, v in outer.items():
        if k in ("$ref", "anyOf", "allOf"):
            continue
        if k == "x-kubernetes-validations" and k in out:
            out[k] = [*out[k], *v]
        elif k == "description" and out.get("description") and out["description"] != v:
            # the field's own words first, then the type's docstring
            out[k] = f"{v.rstrip()} {out['description']}"
        else:
            out[k] = v
    return out


def _clean(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return _clean(_merge(node, defs[name]), defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        return _clean(_merge(node, node["allOf"][0]), defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express union in a structural schema: {node}")
        return _clean(_merge(node, options[0]), defs)

    out: dict[str, Any] = {}
    default = node.get("default")
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "properties":
            out[key] = {p: _clean(v, defs) for p, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _clean(value, defs)
        else:
            out[key] = value
    if default is not None and default != {} and default != []:
        text = json.dumps(default) if not isinstance(default, str) else default
        desc = out.get("description", "").rstrip()
        sep = " " if desc else ""
        out["description"] = f"{desc}{sep}Default: `{text}`."
    if "description" in out:
        out["description"] = " ".join(out["description"].split())
    return _ordered(out)


_FIRST = ("type", "description")
_LAST = ("properties", "required", "x-kubernetes-validations")


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """Keys in a readable order: type, description, constraints, then properties and rules."""
    middle = sorted(k for k in node if k not in _FIRST and k not in _LAST)
    return {k: node[k] for k in (*_FIRST, *middle, *_LAST) if k in node}


def model_schema(model: type[base.ApiModel]) -> dict[str, Any]:
    """Structural schema of one model (camelCase names, validation mode)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _clean(raw, raw.get("$defs", {}))


def root() -> dict[str, Any]:
    """The ``openAPIV3Schema`` of the SpotPolicy CRD."""
    return {
        "type": "object",
        "description": (
            "SpotPolicy declares an EC2 fleet's shape (capacity, spot/on-demand mix, "
            "acceptable instance types, price caps); the operator keeps the fleet at the "
            "cheapest mix that meets it at acceptable interruption risk."
        ),
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": f"Versioned schema of this object: `{names.API_VERSION}`.",
            },
            "kind": {"type": "string", "description": f"`{names.KIND}`."},
            "metadata": {"type": "object"},
            "spec": model_schema(spec.SpotPolicySpec),
            "status": model_schema(status.SpotPolicyStatus),
        },
        "required": ["spec"],
    }
