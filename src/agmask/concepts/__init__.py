"""Concept specs: `load_concept(name_or_path)` -> (ConceptSpec, source text)."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from agmask.concepts.schema import EVAL_SETS, SET_NAMES, TRAIN_SETS, ConceptSpec, PromptItem
from agmask.errors import ConceptError

__all__ = ["load_concept", "LoadedConcept", "ConceptSpec", "PromptItem", "SET_NAMES", "TRAIN_SETS", "EVAL_SETS",
           "shipped_concepts", "training_halves"]


@dataclass(frozen=True)
class LoadedConcept:
    spec: ConceptSpec
    source: str  # path or `shipped:<name>`
    text: str  # the file's contents: part of every stage's input hash


def training_halves(items: list) -> tuple[list, list]:
    """A training set split in two for choosing options on training data only (`agmask tune`,
    bench/ablation.py): every other item, A from the first, B from the second."""
    items = list(items)
    return items[0::2], items[1::2]


def shipped_concepts() -> list[str]:
    root = resources.files("agmask.concepts") / "data"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read(name_or_path: str) -> tuple[str, str]:
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        raise ConceptError(f"--concept {name_or_path} is a directory; pass a concept YAML file or a shipped name "
                           f"({', '.join(shipped_concepts())})")
    if name_or_path.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConceptError(f"concept file {name_or_path} does not exist")
        try:
            return str(path), path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConceptError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None
        except OSError as e:
            raise ConceptError(f"{path}: cannot be read ({e.strerror})") from None
    shipped = resources.files("agmask.concepts") / "data" / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ConceptError(f"unknown concept {name_or_path!r}: use a shipped name ({', '.join(shipped_concepts())}) "
                           "or a path to a YAML file")
    return f"shipped:{name_or_path}", shipped.read_text(encoding="utf-8")


def _field_path(loc: tuple, data) -> str:
    """Turn pydantic's loc (('forget_eval', 3, 'prompt')) into `forget_eval[3].prompt`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_concept(name_or_path: str) -> LoadedConcept:
    """Load and validate a concept; every error is one line naming the file and the field."""
    source, text = _read(name_or_path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConceptError(f"{source}: not valid YAML{where}: {getattr(e, 'problem', e)}") from e
    if not isinstance(data, dict):
        raise ConceptError(f"{source}: expected a mapping of fields (name, answers, ...), got {type(data).__name__}")
    try:
        spec = ConceptSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        field = _field_path(err["loc"], data)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (allowed: " + ", ".join(_allowed_keys(err["loc"])) + ")"
        more = f" (and {e.error_count() - 1} more errors)" if e.error_count() > 1 else ""
        raise ConceptError(f"{source}: field {field}: {msg}{more}") from e
    return LoadedConcept(spec=spec, source=source, text=text)


def _allowed_keys(loc: tuple) -> list[str]:
    model = PromptItem if any(isinstance(p, int) for p in loc) else ConceptSpec
    return list(model.model_fields)
