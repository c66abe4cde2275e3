"""`agmask report --run-dir DIR`: rebuild report.html from the run directory's artefacts (no model, no concept)."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.option("--run-dir", type=click.Path(path_type=Path), default=Path("runs/default"), show_default=True,
              help="Run directory holding every artefact.")
def report_command(run_dir: Path) -> None:
    """Stage 8, report: rebuild report.html from the run directory's JSON and PNG files (never loads a model)."""
    from agmask.cli.summary import print_eval_summary
    from agmask.report import build_report
    from agmask.transaction import recover

    if run_dir.is_dir():
        recover(run_dir)  # finish a commit a crash interrupted, so the report sees whole stages
    path = build_report(run_dir)
    print_eval_summary(run_dir, path)
