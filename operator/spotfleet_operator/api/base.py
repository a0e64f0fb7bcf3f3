"""The base every SpotPolicy API model derives from, and cross-field rules.

A :class:`Rule` is written once and enforced twice: its ``cel`` text becomes an
``x-kubernetes-validations`` entry in the generated CRD (so the API server
refuses bad input at admission), and its ``check`` runs in pydantic when the
operator parses an object (so the two can be compared by tests). Both name the
same field through ``field_path`` (CEL ``fieldPath`` syntax, relative to the
object the rule is attached to, e.g. ``.onDemand.base``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import pydantic
from pydantic import alias_generators, json_schema
from pydantic_core import PydanticCustomError, core_schema

#: ``type`` of the pydantic error a failed :class:`Rule` raises; its ``ctx`` has
#: ``path`` (relative field path) and ``message``.
RULE_ERROR_TYPE = "spotpolicy_rule"


@dataclass(frozen=True, slots=True)
class Rule:
    """A cross-field constraint, as CEL for the API server and Python for the operator.

    ``check(obj)`` returns True when ``obj`` (the parsed model) satisfies the rule;
    it must agree with ``cel`` evaluated on the same object as JSON.
    ``field_path`` is "" when the rule is about the object as a whole.
    ``reason`` is a Kubernetes field-error reason (FieldValueInvalid,
    FieldValueForbidden, FieldValueRequired, FieldValueDuplicate).
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    field_path: str = ""
    reason: str = "FieldValueInvalid"

    def to_validation(self) -> dict[str, str]:
        """The ``x-kubernetes-validations`` entry for this rule."""
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        out["reason"] = self.reason
        return out


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    return value


class ApiModel(pydantic.BaseModel):
    """Base of every spec/status object: camelCase JSON, unknown fields refused, immutable.

    Validation is strict (no "5" for 5, no "true" for true), like the API server's
    schema. As the API server does, input keys whose value is ``null`` are dropped
    (it prunes nulls of non-nullable fields) and integral floats such as ``5.0``
    are read as integers (its JSON decoder does the same).
    """

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        strict=True,
        use_attribute_docstrings=False,
    )

    #: Cross-field rules of this object (see :class:`Rule`).
    cel_rules: ClassVar[tuple[Rule, ...]] = ()

    @pydantic.model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: _integral(v) for k, v in data.items() if v is not None}
        return data

    @pydantic.model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).cel_rules:
            if not rule.check(self):
                raise PydanticCustomError(
                    RULE_ERROR_TYPE,
                    "{message}",
                    {"path": rule.field_path, "message": rule.message},
                )
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls,
        schema: core_schema.CoreSchema,
        handler: pydantic.GetJsonSchemaHandler,
    ) -> json_schema.JsonSchemaValue:
        out = handler(schema)
        target = handler.resolve_ref_schema(out)
        if cls.cel_rules:
            target["x-kubernetes-validations"] = [r.to_validation() for r in cls.cel_rules]
        return out
