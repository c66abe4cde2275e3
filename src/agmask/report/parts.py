"""What a report section is made of, as data the template renders: figures (PNG inlined as base64),
tables (`agmask.evaluate.tables.Table`), notes, and folds (`<details>`) for long tables and JSON dumps."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

from agmask.evaluate.tables import Table
from agmask.report.html import flatten

MAX_JSON_BYTES = 64_000  # bigger JSON files are named, not tabulated
MAX_JSON_ROWS = 60


@dataclass(frozen=True)
class Figure:
    caption: str
    uri: str  # data:image/png;base64,...


@dataclass(frozen=True)
class Fold:
    """A `<details>` block: closed by default, its summary line visible."""
    summary: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Body:
    """One section's content, shown in this order."""
    intro: list[str] = field(default_factory=list)  # notes before everything
    summary: list[str] = field(default_factory=list)  # summary lines, preformatted
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    folds: list[Fold] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.intro or self.summary or self.figures or any(t.rows for t in self.tables) or self.notes or self.folds)


def figure(path: Path, caption: str | None = None) -> Figure:
    """A PNG inlined as base64, captioned with its path in the run directory (the file name by default)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return Figure(caption or Path(path).name, f"data:image/png;base64,{data}")


def figures(run_dir: Path, paths: list[Path]) -> list[Figure]:
    return [figure(p, str(p.relative_to(run_dir))) for p in paths]


def json_fold(path: Path) -> Fold:
    """A small JSON file as a folded key/value table (capped), or a note that it is too big to show."""
    name, size = path.name, path.stat().st_size
    if size > MAX_JSON_BYTES:
        return Fold(name, notes=[f"{name}: {size / 1000:.0f} kB, not shown."])
    try:
        rows = flatten(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        return Fold(name, notes=[f"{name}: unreadable ({e})."])
    more = len(rows) - MAX_JSON_ROWS
    return Fold(f"{name} ({len(rows)} values)", [Table(name, ("key", "value"), [[k, v] for k, v in rows[:MAX_JSON_ROWS]])],
                [f"{more} more rows in {name}."] if more > 0 else [])
