"""The verdict card at the top of the report: every target (value, threshold, met or not, with the base
value), the summary lines, and what trained the adapter (method, steps, and the recipe when
`unlearn/summary.json` names one)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agmask.files import read_json
from agmask.report.evaluation import read_metrics
from agmask.report.headline import headline_lines
from agmask.report.html import flatten
from agmask.targets import TargetResult, evaluate_targets, targets_count


@dataclass
class Verdict:
    results: list[TargetResult] = field(default_factory=list)
    line: str = ""  # "targets: 9 met, 3 not met, 3 not measured (of 15)"
    summary: list[str] = field(default_factory=list)
    adapter: list[tuple[str, object]] = field(default_factory=list)  # (what, value) of the training run
    missing: str = ""  # why there is no verdict


def recipe_rows(unlearn: dict) -> list[tuple[str, object]]:
    """The method, steps and recipe of `unlearn/summary.json` (a recipe may be a name or a dict of options)."""
    rows = [(k, unlearn[k]) for k in ("method", "steps_run") if k in unlearn]
    recipe = unlearn.get("recipe")
    if isinstance(recipe, dict):
        rows += [(f"recipe.{k}", v) for k, v in flatten(recipe)]
    elif recipe is not None:
        rows.append(("recipe", recipe))
    return rows


def build_verdict(run_dir: Path, usable: set[str]) -> Verdict:
    """`usable`: the run-dir folders whose results are current (the verdict needs eval/)."""
    if "eval" not in usable or not (run_dir / "eval" / "metrics.json").is_file():
        return Verdict(missing="No verdict: the evaluation has not run or is not current (see the note above).")
    metrics = read_metrics(run_dir)
    results = evaluate_targets(metrics)
    unlearn = run_dir / "unlearn" / "summary.json"
    adapter = recipe_rows(read_json(unlearn)) if "unlearn" in usable and unlearn.is_file() else []
    return Verdict(results, targets_count(results), headline_lines(metrics), adapter)
