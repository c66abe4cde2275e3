"""`agmask results`: write docs/RESULTS.md from the run directories docs/results.yaml lists (or those given)."""
from __future__ import annotations

from pathlib import Path

import click

from agmask.results.spec import LABELS


@click.command("results")
@click.argument("run_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--spec", "spec_path", type=click.Path(path_type=Path), default=Path("docs/results.yaml"),
              show_default=True, help="The list of run directories, each with its label and purpose (used when no "
              "RUN_DIRS are given).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("docs/RESULTS.md"), show_default=True,
              help="The page to write; - prints it instead.")
@click.option("--label", type=click.Choice(list(LABELS)), default="validation",
              show_default=True, help="Label of the RUN_DIRS given on the command line (test: evaluation sets read "
              "once for a setting chosen on training data; validation: looked at while choosing; training: "
              "training-set numbers only, as agmask tune measures them).")
@click.option("--purpose", default="Given on the command line.", show_default=True,
              help="One-line purpose of the RUN_DIRS given on the command line.")
def results_command(run_dirs: tuple[Path, ...], spec_path: Path, out: Path, label: str, purpose: str) -> None:
    """Write docs/RESULTS.md from run directories (no model loaded): headline, per-set forgetting and locality
    with intervals, attacks, recommendations, compare, tune, timing; each table names its command and commit.
    A listed run directory that is not on this machine keeps the tables the page it replaces had for it."""
    from agmask.results import entries_from_dirs, load_results_spec, render_results, write_results

    if run_dirs:
        spec, listed_in = entries_from_dirs(list(run_dirs), label, purpose), "given on the command line"
    else:
        spec, listed_in = load_results_spec(spec_path), f"listed in `{spec_path}`"
    if str(out) == "-":
        click.echo(render_results(spec, listed_in), nl=False)
        return
    written, kept, missing = write_results(spec, out, listed_in)
    click.echo(f"{out}: {written} run(s)" + (f", {kept} kept from the previous page (run directory not here)"
                                             if kept else "") + (f", {missing} listed but not run yet" if missing else ""))
