"""Stage 8, report: `report.html` in the run dir, from the JSON/JSONL/PNG artefacts only (no model)."""
from __future__ import annotations

from pathlib import Path

from agmask.pipeline import OPTIONAL_STAGES, STAGES

NAME = "report"
DIR = "report"  # holds only the DONE marker; the page itself is EXTRA_OUTPUTS
EXTRA_OUTPUTS = ["report.html"]
# Every earlier stage: the report shows their artefacts, so any of them changing rebuilds it.
DEPENDS: tuple[str, ...] = tuple(STAGES[: STAGES.index(NAME)]) if NAME in STAGES else tuple(STAGES)
USES: tuple[str, ...] = tuple(OPTIONAL_STAGES)  # shown (and hashed) when they are done


def run(cfg, run_dir: Path, session) -> None:
    from agmask.report import build_report

    session.paths.stage(NAME).mkdir(parents=True, exist_ok=True)
    path = build_report(session.paths.root)
    session.reporter.log(f"report: {path}")
