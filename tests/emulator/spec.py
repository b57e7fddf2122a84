"""The machine-readable Bot API spec and request validation against it.

Telegram silently ignores parameters it does not know, so a typo such as ``reply_markUp`` or
a field removed from the API makes a bot misbehave without any error.  The emulator checks
every request against ``bot-api-spec.json`` (Bot API 10.1) and is stricter than Telegram on
purpose: unknown methods, unknown fields (also inside nested objects such as keyboards),
missing required fields and values of the wrong JSON type are all reported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_SPEC_PATH",
    "LEGACY_PARAMETERS",
    "BotApiSpec",
    "FieldSpec",
    "MethodSpec",
    "SpecProblem",
    "TypeSpec",
    "decode_json_value",
]

DEFAULT_SPEC_PATH = Path(__file__).with_name("bot-api-spec.json")

#: Parameters that left the documentation but that Telegram still accepts, keyed by name:
#: (the current field that replaced them, their type).  They apply to every method that has
#: the replacement field.  aiogram itself still sends ``disable_web_page_preview`` whenever
#: ``DefaultBotProperties(link_preview_is_disabled=...)`` is set, so rejecting these would
#: reject correct bots; the emulator accepts them and lists them in ``legacy_params``.
LEGACY_PARAMETERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "disable_web_page_preview": ("link_preview_options", ("Boolean",)),  # Bot API 7.0
    "reply_to_message_id": ("reply_parameters", ("Integer",)),  # Bot API 7.0
    "allow_sending_without_reply": ("reply_parameters", ("Boolean",)),  # Bot API 7.0
    "thumb": ("thumbnail", ("InputFile", "String")),  # Bot API 6.6
}

_ARRAY_PREFIX = "Array of "
_SCALARS = frozenset({"String", "Integer", "Float", "Boolean"})


@dataclass(frozen=True)
class FieldSpec:
    """One parameter of a method or one field of a type."""

    name: str
    types: tuple[str, ...]
    required: bool

    @property
    def keeps_raw_string(self) -> bool:
        """True if a form value must stay a string (``text="123"`` is not the number 123)."""
        return set(self.types) <= {"String", "InputFile"}


@dataclass(frozen=True)
class MethodSpec:
    """A Bot API method: its parameters and what it returns."""

    name: str
    fields: Mapping[str, FieldSpec]
    returns: tuple[str, ...]


@dataclass(frozen=True)
class TypeSpec:
    """A Bot API object type; abstract types (ChatMember, BotCommandScope) list subtypes."""

    name: str
    fields: Mapping[str, FieldSpec]
    subtypes: tuple[str, ...]


@dataclass(frozen=True)
class SpecProblem:
    """A request that does not match the spec; ``description`` follows Telegram's wording."""

    field: str | None
    description: str
    status: int = 400


def _fields(raw: Mapping[str, Any]) -> dict[str, FieldSpec]:
    return {
        f["name"]: FieldSpec(f["name"], tuple(f["types"]), bool(f["required"]))
        for f in raw.get("fields", [])
    }


def decode_json_value(raw: str) -> Any:
    """``json.loads`` when the string is JSON, else the string itself (form-data convention)."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class BotApiSpec:
    """Lookup and validation over the spec file; load once with :meth:`load`."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.version: str = str(raw.get("version", "unknown"))
        self.methods: dict[str, MethodSpec] = {
            name: MethodSpec(name, _fields(m), tuple(m.get("returns", [])))
            for name, m in raw["methods"].items()
        }
        self.types: dict[str, TypeSpec] = {
            name: TypeSpec(name, _fields(t), tuple(t.get("subtypes", [])))
            for name, t in raw["types"].items()
        }
        # Telegram matches method names case-insensitively.
        self._by_lower = {name.lower(): spec for name, spec in self.methods.items()}

    @classmethod
    def load(cls, path: Path | str = DEFAULT_SPEC_PATH) -> BotApiSpec:
        """Load (and cache) the spec; parsing the 1 MB file once per test session is enough."""
        return _load_cached(str(Path(path).resolve()))

    def method(self, name: str) -> MethodSpec | None:
        """The method called ``name`` (case-insensitive), or None if the API has no such one."""
        return self._by_lower.get(name.lower())

    # -- decoding ----------------------------------------------------------------------------

    def decode_param(self, method: MethodSpec | None, name: str, value: Any) -> Any:
        """Turn a transported value into its JSON value, guided by the field's declared types.

        Form and query values are strings; Telegram (and aiogram) encode non-string values as
        JSON inside them.  A field declared as String keeps its raw text so that a message
        ``"123"`` or ``"true"`` is not turned into a number or boolean.
        """
        if not isinstance(value, str):
            return value
        spec = (method.fields.get(name) or self.legacy_field(method, name)) if method else None
        if spec is not None and spec.keeps_raw_string:
            return value
        return decode_json_value(value)

    # -- validation --------------------------------------------------------------------------

    def check_request(self, method: MethodSpec, params: Mapping[str, Any]) -> list[SpecProblem]:
        """All the ways ``params`` break the spec of ``method`` (empty list: request is fine)."""
        problems: list[SpecProblem] = []
        for spec in method.fields.values():
            if spec.required and params.get(spec.name) is None:
                problems.append(SpecProblem(spec.name, f"{spec.name} is required"))
        for name, value in params.items():
            field = method.fields.get(name) or self.legacy_field(method, name)
            if field is None:
                problems.append(
                    SpecProblem(
                        name,
                        f"unknown parameter {name!r}: method {method.name} has no such field "
                        f"in {self.version} (the emulator rejects it to catch typos)",
                    )
                )
                continue
            if value is None:
                continue
            for issue in self.check_value(value, field.types, name):
                problems.append(SpecProblem(name, issue))
        return problems

    def legacy_field(self, method: MethodSpec, name: str) -> FieldSpec | None:
        """The spec of a legacy parameter Telegram still accepts for ``method``, if it is one."""
        legacy = LEGACY_PARAMETERS.get(name)
        if legacy is None or legacy[0] not in method.fields:
            return None
        return FieldSpec(name, legacy[1], required=False)

    def check_value(self, value: Any, types: Sequence[str], path: str) -> list[str]:
        """Problems of ``value`` against a union of type expressions (empty if one matches).

        If the value has the wrong shape for every member of the union, one combined message
        is returned; otherwise the problems of the closest member (e.g. a keyboard button
        with a misspelt field), which is what a developer needs to see.
        """
        candidates: list[list[str]] = []
        for type_expr in types:
            issues = self._check_one(value, type_expr, path)
            if not issues:
                return []
            candidates.append(issues)
        shape_only = all(
            len(issues) == 1 and issues[0].startswith(f"{path}: expected") for issues in candidates
        )
        if len(types) > 1 and shape_only:
            return [f"{path}: expected {' or '.join(types)}, got {_describe(value)}"]
        return min(candidates, key=len) if candidates else []

    def check_object(self, type_name: str, obj: Any, path: str = "") -> list[str]:
        """Problems of a JSON object against a spec type; used for requests and responses."""
        path = path or type_name
        spec = self.types.get(type_name)
        if spec is None:
            return []
        if spec.subtypes:
            return self.check_value(obj, spec.subtypes, path)
        if not isinstance(obj, dict):
            return [f"{path}: expected {type_name} object, got {_describe(obj)}"]
        issues: list[str] = []
        for field in spec.fields.values():
            if field.required and obj.get(field.name) is None:
                issues.append(f"{path}.{field.name} is required in {type_name}")
        for key, item in obj.items():
            field_spec = spec.fields.get(key)
            if field_spec is None:
                if spec.fields:  # types documented without fields accept anything
                    issues.append(f"{path}: unknown field {key!r} in {type_name}")
                continue
            if item is not None:
                issues.extend(self.check_value(item, field_spec.types, f"{path}.{key}"))
        return issues

    def _check_one(self, value: Any, type_expr: str, path: str) -> list[str]:
        if type_expr.startswith(_ARRAY_PREFIX):
            if not isinstance(value, list):
                return [f"{path}: expected {type_expr}, got {_describe(value)}"]
            inner = type_expr.removeprefix(_ARRAY_PREFIX)
            issues: list[str] = []
            for index, item in enumerate(value):
                issues.extend(self.check_value(item, [inner], f"{path}[{index}]"))
            return issues
        if type_expr in _SCALARS:
            return (
                []
                if _scalar_matches(value, type_expr)
                else [f"{path}: expected {type_expr}, got {_describe(value)}"]
            )
        if type_expr == "InputFile":
            # Uploads travel as "attach://<part>" strings pointing at a multipart file part.
            return [] if isinstance(value, str) else [f"{path}: expected InputFile"]
        return self.check_object(type_expr, value, path)


def _scalar_matches(value: Any, type_name: str) -> bool:
    if type_name == "String":
        return isinstance(value, str)
    if type_name == "Boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if type_name == "Integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, int | float)  # Float


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Float"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@lru_cache(maxsize=4)
def _load_cached(path: str) -> BotApiSpec:
    with open(path, encoding="utf-8") as handle:
        return BotApiSpec(json.load(handle))
