"""Parse a SpotPolicy object as the operator receives it, never raising.

The operator calls :func:`parse_policy` on every object; an :class:`InvalidSpec`
becomes a ``Degraded`` condition with reason ``InvalidSpec`` and the message
naming the field path (``spec.capacity.min: ...``), never a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pydantic

from spotfleet_operator.api import base, conditions, names, spec

#: Longest message an InvalidSpec carries (condition messages must stay small).
MAX_MESSAGE_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem at a field path (``spec.capacity.min``, ``spec.availabilityZones[1]``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


@dataclass(frozen=True, slots=True)
class ParsedPolicy:
    """A SpotPolicy whose spec parsed: identity plus the validated spec."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    spec: spec.SpotPolicySpec


@dataclass(frozen=True, slots=True)
class InvalidSpec:
    """A SpotPolicy whose spec did not parse; ``errors`` is never empty."""

    reason: ClassVar[str] = conditions.INVALID_SPEC

    errors: tuple[FieldError, ...]
    name: str = ""
    namespace: str = ""
    generation: int | None = None

    @property
    def message(self) -> str:
        """All errors, ``; ``-separated, at most MAX_MESSAGE_CHARS characters."""
        text = "; ".join(str(e) for e in self.errors)
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[: MAX_MESSAGE_CHARS - 3] + "..."
        return text


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _field_errors(exc: pydantic.ValidationError, prefix: str) -> tuple[FieldError, ...]:
    out: list[FieldError] = []
    for err in exc.errors(include_url=False, include_input=False):
        path = _path((prefix, *err["loc"])) if prefix else _path(tuple(err["loc"]))
        msg = str(err["msg"])
        if err["type"] == base.RULE_ERROR_TYPE:
            ctx = err.get("ctx") or {}
            path += str(ctx.get("path", ""))
            msg = str(ctx.get("message", msg))
        out.append(FieldError(path, msg))
    return tuple(out) or (FieldError(prefix, "invalid"),)


def parse_spec(raw: object) -> spec.SpotPolicySpec | InvalidSpec:
    """Validate ``raw`` (the ``spec`` mapping) against the models; paths start with ``spec``."""
    try:
        return spec.SpotPolicySpec.model_validate(raw)
    except pydantic.ValidationError as exc:
        return InvalidSpec(_field_errors(exc, "spec"))
    except Exception as exc:  # the contract is "never raises"
        return InvalidSpec((FieldError("spec", f"cannot parse: {type(exc).__name__}: {exc}"),))


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def parse_policy(body: object) -> ParsedPolicy | InvalidSpec:
    """Parse a whole SpotPolicy object (apiVersion, kind, metadata, spec); never raises.

    ``status`` is ignored. Unknown top-level keys are ignored (the API server owns them).
    """
    try:
        if not isinstance(body, Mapping):
            return InvalidSpec((FieldError("", f"object is a {type(body).__name__}"),))
        meta: Mapping[str, Any] = body.get("metadata") or {}
        if not isinstance(meta, Mapping):
            meta = {}
        gen = meta.get("generation")
        generation = gen if isinstance(gen, int) and not isinstance(gen, bool) else None
        name, namespace = _str(meta.get("name")), _str(meta.get("namespace"))
        problems: list[FieldError] = []
        if body.get("apiVersion") not in (None, names.API_VERSION):
            problems.append(FieldError("apiVersion", f"must be {names.API_VERSION}"))
        if body.get("kind") not in (None, names.KIND):
            problems.append(FieldError("kind", f"must be {names.KIND}"))
        if "spec" not in body:
            problems.append(FieldError("spec", "Field required"))
            return InvalidSpec(tuple(problems), name, namespace, generation)
        parsed = parse_spec(body["spec"])
        if isinstance(parsed, InvalidSpec):
            return InvalidSpec((*problems, *parsed.errors), name, namespace, generation)
        if problems:
            return InvalidSpec(tuple(problems), name, namespace, generation)
        return ParsedPolicy(name, namespace, _str(meta.get("uid")), generation, parsed)
    except Exception as exc:  # the contract is "never raises"
        return InvalidSpec((FieldError("", f"cannot parse: {type(exc).__name__}: {exc}"),))
