"""Sections of optional stages (`agmask compare`, `agmask tune`): each reads its own folder and shows its
figures, its summary JSON as a table and longer records folded. A stage with a richer view replaces its
entry in `sections.SECTIONS`."""
from __future__ import annotations

from pathlib import Path

from agmask.evaluate.tables import Table
from agmask.files import read_json, read_jsonl
from agmask.report.html import flatten
from agmask.report.parts import MAX_JSON_ROWS, Body, Fold, figures


def method_table(data) -> Table:
    """compare/compare.json: rows = methods, columns = metrics. Accepts {"methods": {m: {...}}}, {m: {...}} or
    [{"method": m, ...}]; nested values are flattened to dotted columns."""
    if isinstance(data, dict) and isinstance(data.get("methods"), (dict, list)):
        data = data["methods"]
    if isinstance(data, list):
        data = {str(r.get("method", i)): {k: v for k, v in r.items() if k != "method"} for i, r in enumerate(data)}
    flat = {method: dict(flatten(values)) for method, values in data.items() if isinstance(values, dict)}
    columns = list(dict.fromkeys(k for v in flat.values() for k in v))
    return Table("Method comparison", ("method", *columns), [[m, *[v.get(c) for c in columns]] for m, v in flat.items()])


def compare_body(run_dir: Path, dirs: tuple[str, ...]) -> Body:
    folder = run_dir / "compare"
    path = folder / "compare.json"
    return Body(figures=figures(run_dir, sorted(folder.glob("*.png"))) if folder.is_dir() else [],
                tables=[method_table(read_json(path))] if path.is_file() else [])


def records_table(title: str, records: list[dict]) -> Table:
    """JSONL records as rows (nested values flattened to dotted columns), the first MAX_JSON_ROWS."""
    flat = [dict(flatten(r)) for r in records[:MAX_JSON_ROWS]]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    return Table(title, tuple(columns), [[r.get(c) for c in columns] for r in flat])


def tune_body(run_dir: Path, dirs: tuple[str, ...]) -> Body:
    folder = run_dir / "tune"
    if not folder.is_dir():
        return Body()
    choice, trials = folder / "choice.json", folder / "trials.jsonl"
    tables = [Table("Chosen recipe (tune/choice.json)", ("key", "value"),
                    [[k, v] for k, v in flatten(read_json(choice))])] if choice.is_file() else []
    folds = []
    if trials.is_file():
        records = read_jsonl(trials)
        more = len(records) - MAX_JSON_ROWS
        folds.append(Fold(f"Trials (tune/trials.jsonl, {len(records)})", [records_table("tune/trials.jsonl", records)],
                          [f"{more} more trials in tune/trials.jsonl."] if more > 0 else []))
    return Body(figures=figures(run_dir, sorted(folder.glob("*.png"))), tables=tables, folds=folds)
