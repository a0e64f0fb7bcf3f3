"""The SpotPolicy resource's identity in the Kubernetes API."""

from __future__ import annotations

from pathlib import Path

GROUP = "spotfleet.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SpotPolicy"
LIST_KIND = "SpotPolicyList"
PLURAL = "spotpolicies"
SINGULAR = "spotpolicy"
SHORT_NAMES: tuple[str, ...] = ("spol",)
CATEGORIES: tuple[str, ...] = ("spotfleet",)
CRD_NAME = f"{PLURAL}.{GROUP}"


def crd_file() -> Path:
    """The SpotPolicy CRD manifest: the repository's ``crds/`` (editable install) or the
    copy the wheel carries (``spotfleet_operator/_crds``)."""
    pkg = Path(__file__).resolve().parents[1]
    for d in (pkg.parents[1] / "crds", pkg / "_crds"):
        f = d / f"{CRD_NAME}.yaml"
        if f.exists():
            return f
    raise FileNotFoundError("the SpotPolicy CRD is missing from this installation")
