"""The report's method-comparison section: a function of compare/compare.json (and compare.png) only.

`compare_rows(data)` gives the table (header, rows of text cells) from the parsed compare.json, for any
page builder; `compare_section(run_dir)` renders it with the figure and what the columns mean.
"""
from __future__ import annotations

from pathlib import Path

from agmask.comparison.table import CORE, attack_columns, cell
from agmask.files import read_json
from agmask.report.html import esc, figure, section, table

ANCHOR = "compare"
TITLE = "Method comparison: mask variants at equal steps and seeds"


def compare_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per variant, `mean ± sd` over seeds (one seed: `value [95% interval]`)."""
    columns = CORE + attack_columns(data) + [("train_seconds", "train s")]
    header = ["variant", "what", "seeds", *[h for _, h in columns]]
    rows = [[name, entry.get("description", ""), str(entry.get("n_seeds", 0)),
             *[cell(entry, c, ".0f" if c == "train_seconds" else ".3f") for c, _ in columns]]  # 3 decimals: KLs are small
            for name, entry in data.get("variants", {}).items()]
    return header, rows


def compare_section(run_dir: Path) -> str:
    """The section, or "" when the run has no compare.json of this format."""
    path = Path(run_dir) / "compare" / "compare.json"
    if not path.is_file():
        return ""
    data = read_json(path)
    if data.get("schema") != 1 or not isinstance(data.get("variants"), dict):
        return ""
    header, rows = compare_rows(data)
    settings = data["settings"]
    seeds = len(settings["seeds"])
    note = (f"{len(settings['variants'])} variants x {seeds} seed(s) (seeds {settings['seeds']}), "
            f"{settings['steps']} training steps each, early stopping off; the control masks copy the "
            f"{data.get('reference')} mask. Cells: " + ("mean ± sd over seeds." if seeds > 1 else
                                                       "one seed, value [95% bootstrap interval over prompts]."))
    if not data.get("complete", True):
        note += " Incomplete: some rows have not run yet (rerun `agmask compare` to continue)."
    body = f'<p class="note">{esc(note)}</p>' + table(header, rows)
    png = path.parent / "compare.png"
    if png.is_file():
        body += figure(png, str(png.relative_to(run_dir)))
    body += "<h3>Columns</h3>" + table(["column", "meaning"], [[c, h] for c, h in data.get("columns", {}).items()])
    return section(TITLE, body, ANCHOR)
