"""The "Recommendations before / after" section (issue 17) and its summary line.

The tables are the ones `recommendation_rate` and `recommendation_preference` declare (section
"recommendations"); this section adds the base model's recommended titles across wordings, from the
`recommend` block of `perturb/stability.json`. Absent or skipped metrics leave a note, never an error.
"""
from __future__ import annotations

from pathlib import Path

from agmask.evaluate.tables import Table
from agmask.files import read_json
from agmask.report.evaluation import declared_tables, read_metrics
from agmask.report.headline import headline_lines
from agmask.report.parts import Body

ANCHOR = "recommendations"
TITLE = "Recommendations before / after"
VIEWS = {"greedy": "greedy title", "all": "every generation (greedy + samples)", "mc_top": "top MC candidate"}


def recommend_line(metrics: dict) -> str | None:
    """The summary line on recommendations, or None when neither metric was measured."""
    return next((line for line in headline_lines(metrics) if line.startswith("recommendations (")), None)


def perturbation_tables(block: dict | None) -> list[Table]:
    if not block or block.get("skipped"):
        return []
    means = block["across_wordings"]
    note = ("Each request in its original wording and every generated family; consistency = share of the modal title "
            "among a request's wordings, mean over requests. Figures: perturb/recommend_stability.png, "
            "perturb/recommend_heatmap.png.")
    rows = [[r["prompt"], r["wordings"], *[r[v]["modal"] for v in VIEWS], *[r[v]["consistency"] for v in VIEWS]]
            for r in block["per_request"].values()]
    return [Table("Base model: recommended titles across wordings (perturb)",
                  ("answers compared", "consistency", "distinct titles", "entropy (bits)"),
                  [[VIEWS[v], means[v]["consistency"], means[v]["distinct"], means[v]["entropy_bits"]] for v in VIEWS],
                  note),
            Table("Base model: each request across wordings", ("request", "wordings", *[f"modal: {v}" for v in VIEWS],
                                                               *[f"consistency: {v}" for v in VIEWS]), rows)]


def recommend_body(run_dir: Path, dirs: tuple[str, ...]) -> Body:
    """`dirs`: which of eval/ and perturb/ are current."""
    metrics = read_metrics(run_dir) if "eval" in dirs else {}
    perturb = run_dir / "perturb" / "stability.json"
    block = read_json(perturb).get("recommend") if "perturb" in dirs and perturb.is_file() else None
    tables, notes = declared_tables(metrics, ANCHOR)
    tables += perturbation_tables(block)
    if block and block.get("skipped"):
        notes.append(f"Not measured: {block['skipped']}.")
    line = recommend_line(metrics)
    return Body(summary=[line] if line else [], tables=tables, notes=list(dict.fromkeys(notes)))
