"""The SpotPolicy API (``spotfleet.dev/v1alpha1``): models, CRD/doc generation, parsing.

The pydantic models in :mod:`spec` and :mod:`status` are the single source of
truth: the CRD (``crdgen``) and the reference page (``docgen``) are generated
from them, and the operator parses every object through them
(:func:`parse_policy`, which never raises).
"""

from spotfleet_operator.api import conditions
from spotfleet_operator.api.convert import to_engine_policy, to_engine_requirements
from spotfleet_operator.api.names import (
    API_VERSION,
    CRD_NAME,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    crd_file,
)
from spotfleet_operator.api.parse import (
    FieldError,
    InvalidSpec,
    ParsedPolicy,
    parse_policy,
    parse_spec,
)
from spotfleet_operator.api.spec import SpotPolicySpec
from spotfleet_operator.api.status import Condition, SpotPolicyStatus

__all__ = [
    "API_VERSION",
    "CRD_NAME",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "Condition",
    "FieldError",
    "InvalidSpec",
    "ParsedPolicy",
    "SpotPolicySpec",
    "SpotPolicyStatus",
    "conditions",
    "crd_file",
    "parse_policy",
    "parse_spec",
    "to_engine_policy",
    "to_engine_requirements",
]
