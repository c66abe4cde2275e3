"""What a metric contributes to the report and the summary, as plain data (no HTML here).

A metric declares, beside its function, `report=fn(value) -> list[Table]` (the tables its value fills) and
`headline=fn(value) -> list[(line, part)]` (its parts of the summary lines); see `registry.metric`. The
report renders the tables through its template, merging tables of the same title and header from several
metrics (in registry order), so a new metric needs no report edit.

A table cell is a plain JSON value (the report rounds floats to 4 significant digits and shows None as
n/a) or one of three markers: `Bold` (the worst row), `Reply` (a generated reply, with whether it contains
the answer), `Lines` (several short lines in one cell).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Bold:
    value: object


@dataclass(frozen=True)
class Reply:
    text: str
    hit: bool | None = None  # True: the reply contains the answer (marked in the report)


@dataclass(frozen=True)
class Lines:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    title: str
    header: tuple[str, ...]
    rows: list[list] = field(default_factory=list)
    note: str = ""  # a sentence shown under the title

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", tuple(self.header))
        widths = {len(r) for r in self.rows}
        if widths - {len(self.header)}:
            raise ValueError(f"table {self.title!r}: rows of {sorted(widths)} cells under {len(self.header)} columns")


# ---- number formatting shared by the summary lines ----

def fmt(value, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def arrow(side: dict, key: str, spec: str = ".2f") -> str:
    """`base -> adapted` of one key of a `{"base": {...}, "adapted": {...}}` value."""
    return f"{fmt(side['base'].get(key), spec)} -> {fmt(side['adapted'].get(key), spec)}"


def ci(interval: dict | None, spec: str = ".2f") -> str:
    """` [low, high]` of a bootstrap interval (intervals.py), or nothing when there is none."""
    if not interval or interval.get("low") is None:
        return ""
    return f" [{fmt(interval['low'], spec)}, {fmt(interval['high'], spec)}]"


def pair(side: dict, key: str) -> list:
    """[base, adapted] values of one key."""
    return [side["base"].get(key), side["adapted"].get(key)]
