"""The SpotPolicy resource's identity in the Kubernetes API."""

from __future__ import annotations

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
