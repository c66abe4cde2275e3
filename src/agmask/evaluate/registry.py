"""The metric registry: one decorated function per metric, run in order, resumable.

A metric is `fn(ctx: EvalContext) -> dict` registered with `@metric(name, kind)`. `run_metrics`
rewrites `eval/metrics.json` atomically after every metric, so a crash loses at most the metric
that was running, and a rerun with the same input hash skips every metric already in the file.
Kinds group metrics in the report and the summary; every `attack` metric returns
`{"variants": {name: {"recovered_fraction": float | None, "flag": str | None, ...}}}`.

A metric also declares what it shows (`tables.py`): `report=fn(value) -> list[Table]`, the tables of the
report section `section` it fills, and `headline=fn(value) -> list[(line, part)]`, its parts of the summary
lines. Both read the metric's value alone, so a new metric needs no report edit. A value with a
`skipped` key (the metric could not run here) shows as "not measured" with its reason instead.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from agmask.errors import StageError
from agmask.files import read_json, write_json

if TYPE_CHECKING:
    from agmask.evaluate.context import EvalContext
    from agmask.evaluate.tables import Table

KINDS = ("artefact", "forget", "locality", "utility", "fluency", "internals", "attack")
SCHEMA = 1
RESERVED = ("kind", "seconds", "doc")  # keys every metric entry gets besides its own


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str
    fn: Callable[["EvalContext"], dict]
    doc: str  # first docstring line, copied into metrics.json
    report: Callable[[dict], list["Table"]] | None = None  # the report tables its value fills
    headline: Callable[[dict], list[tuple[str, str]]] | None = None  # (summary line, part) pairs
    section: str = "evaluation"  # the report section its tables go to


METRICS: dict[str, Metric] = {}


def metric(name: str, kind: str, report: Callable[[dict], list["Table"]] | None = None,
           headline: Callable[[dict], list[tuple[str, str]]] | None = None, section: str = "evaluation") -> Callable:
    """Register `fn` as metric `name` (its key in metrics.json), with what it shows in the report and summary."""
    if kind not in KINDS:
        raise ValueError(f"unknown metric kind {kind!r} (kinds: {', '.join(KINDS)})")

    def register(fn: Callable[["EvalContext"], dict]) -> Callable[["EvalContext"], dict]:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = Metric(name, kind, fn, (fn.__doc__ or name).strip().splitlines()[0], report, headline, section)
        return fn

    return register


def check_known(names: tuple[str, ...] | list[str]) -> None:
    """ValueError naming the first unregistered metric, with the nearest registered name (for option checks)."""
    from agmask.config import nearest

    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}{nearest(unknown[0], METRICS)} (known: {', '.join(METRICS)})")


def resolve(names: tuple[str, ...] | list[str]) -> list[Metric]:
    """The metrics to run, in registry order; unknown names are a clean error."""
    unknown = sorted(set(names) - set(METRICS))
    if unknown:
        raise StageError(f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(METRICS)})")
    return [m for n, m in METRICS.items() if not names or n in names]


def load_state(path: Path, input_hash: str, resume: bool) -> dict:
    """The metrics file to continue from: the existing one if it was made from the same inputs."""
    if resume and path.is_file():
        try:
            state = read_json(path)
        except (OSError, ValueError):
            state = None  # damaged: start over
        if state and state.get("schema") == SCHEMA and state.get("input_hash") == input_hash:
            return state
    return {"schema": SCHEMA, "input_hash": input_hash, "metrics": {}}


def run_metrics(ctx: "EvalContext", metrics: list[Metric], path: Path, input_hash: str, resume: bool = True,
                header: dict | None = None) -> dict:
    """Compute each metric not yet in `path` for this input hash; rewrite the file after each one."""
    state = load_state(path, input_hash, resume)
    state.update(header or {})
    for m in metrics:
        if m.name in state["metrics"]:
            ctx.reporter.log(f"metric {m.name}: already in {path.name}, skipped")
            continue
        start = time.perf_counter()
        value = m.fn(ctx)
        clash = set(RESERVED) & set(value)
        if clash:
            raise ValueError(f"metric {m.name} returned reserved key(s) {sorted(clash)}")
        seconds = round(time.perf_counter() - start, 2)
        state["metrics"][m.name] = {"kind": m.kind, "doc": m.doc, "seconds": seconds, **value}
        write_json(path, state)
        ctx.reporter.log(f"metric {m.name}: {seconds:.1f} s")
    write_json(path, state)
    return state
