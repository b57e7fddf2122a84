"""Reading NLU training data in Rasa 3 YAML: validated first, then parsed.

The same files train the embedded model and a real Rasa model, so this reads what Rasa reads:
`version` and an `nlu:` list of `intent` / `synonym` / `regex` / `lookup` items, each with an
`examples: |` block of `- ` lines, entities annotated inline as `[13](age)` or
`[bf]{"entity": "relation", "value": "boyfriend"}`. A malformed file raises ConfigError naming
the file and the line, before anything is trained on it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bot.errors import ConfigError

DEFAULT_DATA_DIR = Path(__file__).with_name("data")
SECTION_KINDS = ("intent", "synonym", "regex", "lookup")
_ALLOWED_KEYS = {*SECTION_KINDS, "examples", "metadata"}
# [text](entity) or [text]{"entity": ..., "value": ...}
_ANNOTATION = re.compile(r"\[(?P<text>[^\]\[]+)\](?:\((?P<entity>[a-z_]+)\)|(?P<json>\{[^}]*\}))")


@dataclass(frozen=True)
class AnnotatedEntity:
    entity: str
    value: str
    start: int
    end: int


@dataclass(frozen=True)
class Example:
    text: str
    intent: str
    entities: tuple[AnnotatedEntity, ...] = ()
    source: str = ""


@dataclass
class TrainingData:
    examples: list[Example] = field(default_factory=list)
    synonyms: dict[str, str] = field(default_factory=dict)  # surface form (folded) -> value
    regexes: dict[str, list[str]] = field(default_factory=dict)
    lookups: dict[str, list[str]] = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def intents(self) -> list[str]:
        return sorted({e.intent for e in self.examples})

    def texts_and_labels(self) -> tuple[list[str], list[str]]:
        return [e.text for e in self.examples], [e.intent for e in self.examples]


def _data_files(paths: Iterable[Path] | Path) -> list[Path]:
    if isinstance(paths, Path):
        return sorted(paths.glob("*.yml")) if paths.is_dir() else [paths]
    return sorted(paths)


def data_fingerprint(paths: Iterable[Path] | Path = DEFAULT_DATA_DIR) -> str:
    """A short hash of the training files' names and bytes: the model's version."""
    return _fingerprint((path.name, path.read_bytes()) for path in _data_files(paths))


def _fingerprint(files: Iterable[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for name, raw in files:
        digest.update(name.encode() + b"\0" + raw)
    return digest.hexdigest()[:16]


def load_training_data(paths: Iterable[Path] | Path = DEFAULT_DATA_DIR) -> TrainingData:
    """Load every `*.yml` under a folder (or the given files), in a stable order."""
    files = _data_files(paths)
    if not files:
        raise ConfigError(f"no training data files found in {paths}")
    data = TrainingData()
    seen: dict[str, str] = {}
    contents = [(path, path.read_bytes()) for path in files]  # read once: parse and hash
    for path, raw in contents:
        _parse_file(path, raw.decode("utf-8"), data, seen)
    data.fingerprint = _fingerprint((path.name, raw) for path, raw in contents)
    return data


def _parse_file(path: Path, text: str, data: TrainingData, seen: dict[str, str]) -> None:
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML") from None
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{path}:1: expected a mapping with 'version' and 'nlu'")
    top = {key.value: value for key, value in root.value}
    unknown = set(top) - {"version", "nlu"}
    if unknown:
        raise ConfigError(f"{path}:1: unknown top-level keys {sorted(unknown)}")
    if "nlu" not in top:
        return  # Rasa allows files with only other sections; we read NLU data only
    items = top["nlu"]
    if not isinstance(items, yaml.SequenceNode):
        raise ConfigError(f"{path}:{items.start_mark.line + 1}: 'nlu' must be a list")
    for item in items.value:
        line = item.start_mark.line + 1
        where = f"{path}:{line}"
        if not isinstance(item, yaml.MappingNode):
            raise ConfigError(f"{where}: each nlu item must be a mapping")
        fields = {k.value: v for k, v in item.value}
        unknown = set(fields) - _ALLOWED_KEYS
        kinds = [k for k in SECTION_KINDS if k in fields]
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
        if len(kinds) != 1:
            raise ConfigError(f"{where}: an item needs exactly one of {list(SECTION_KINDS)}")
        kind = kinds[0]
        name_node = fields[kind]
        examples_node = fields.get("examples")
        if not isinstance(name_node, yaml.ScalarNode) or not name_node.value:
            raise ConfigError(f"{where}: '{kind}' needs a name")
        if not isinstance(examples_node, yaml.ScalarNode) or examples_node.style != "|":
            raise ConfigError(f"{where}: 'examples' must be a '|' block of '- ' lines")
        name = str(name_node.value)
        lines = _example_lines(examples_node, path)
        if kind == "intent":
            for text, example_line in lines:
                plain, entities = _parse_annotations(text, f"{path}:{example_line}")
                key = plain.casefold()
                if key in seen and seen[key] != name:
                    raise ConfigError(
                        f"{path}:{example_line}: {plain!r} is under both {seen[key]} and {name}"
                    )
                seen[key] = name
                data.examples.append(Example(plain, name, entities, f"{path.name}:{example_line}"))
                for ent in entities:
                    surface = plain[ent.start : ent.end].casefold()
                    if surface != ent.value.casefold():
                        data.synonyms.setdefault(surface, ent.value)
        elif kind == "synonym":
            for text, _ in lines:
                data.synonyms[text.casefold()] = name
        elif kind == "regex":
            for text, example_line in lines:
                try:
                    re.compile(text)
                except re.error:
                    raise ConfigError(f"{path}:{example_line}: regex does not compile") from None
                data.regexes.setdefault(name, []).append(text)
        else:
            data.lookups.setdefault(name, []).extend(t for t, _ in lines)


def _example_lines(node: yaml.ScalarNode, path: Path) -> list[tuple[str, int]]:
    first_line = node.start_mark.line + 2  # the block starts on the line after `examples: |`
    result = []
    for offset, line in enumerate(str(node.value).splitlines()):
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("- "):
            raise ConfigError(f"{path}:{first_line + offset}: example lines start with '- '")
        result.append((stripped[2:].strip(), first_line + offset))
    return result


def _parse_annotations(text: str, where: str) -> tuple[str, tuple[AnnotatedEntity, ...]]:
    plain_parts: list[str] = []
    entities: list[AnnotatedEntity] = []
    cursor = 0
    length = 0
    for match in _ANNOTATION.finditer(text):
        before = text[cursor : match.start()]
        plain_parts.append(before)
        length += len(before)
        surface = match.group("text")
        if match.group("entity"):
            entity, value = match.group("entity"), surface
        else:
            try:
                spec = json.loads(match.group("json"))
                entity, value = str(spec["entity"]), str(spec.get("value", surface))
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"{where}: malformed entity annotation") from None
        entities.append(AnnotatedEntity(entity, value, length, length + len(surface)))
        plain_parts.append(surface)
        length += len(surface)
        cursor = match.end()
    plain_parts.append(text[cursor:])
    plain = "".join(plain_parts)
    if "[" in plain or "](" in plain:
        raise ConfigError(f"{where}: unbalanced entity annotation")
    if not plain.strip():
        raise ConfigError(f"{where}: empty example")
    return plain, tuple(entities)
