"""The report's sections of `agmask compare` and `agmask ablate`: functions of their own folders' JSON and PNG.

`compare_rows(data)` gives the comparison table (header, rows of text cells) from the parsed compare.json,
for any page builder; `compare_body` / `ablate_body` are the `sections.SECTIONS` builders.
"""
from __future__ import annotations

from pathlib import Path

from agmask.comparison.table import CORE, attack_columns, cell
from agmask.evaluate.tables import Table
from agmask.files import read_json
from agmask.report.parts import Body, Fold, figures

FORMATS = {"train_seconds": ".0f"}  # the rest: 3 decimals (KLs are small)


def compare_rows(data: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per variant, `mean ± sd` over seeds (one seed: `value [95% interval]`)."""
    columns = CORE + attack_columns(data) + [("train_seconds", "train s")]
    header = ["variant", "what", "seeds", *[h for _, h in columns]]
    rows = [[name, entry.get("description", ""), str(entry.get("n_seeds", 0)),
             *[cell(entry, c, FORMATS.get(c, ".3f")) for c, _ in columns]]
            for name, entry in data.get("variants", {}).items()]
    return header, rows


def _compare_note(data: dict) -> str:
    settings = data["settings"]
    seeds = len(settings["seeds"])
    note = (f"{len(settings['variants'])} variants x {seeds} seed(s) (seeds {settings['seeds']}), "
            f"{settings['steps']} training steps each, early stopping off; the control masks copy the "
            f"{data.get('reference')} mask. Cells: " + ("mean ± sd over seeds." if seeds > 1 else
                                                       "one seed, value [95% bootstrap interval over prompts]."))
    if not data.get("complete", True):
        note += " Incomplete: some rows have not run yet (rerun `agmask compare` to continue)."
    return note


def compare_body(run_dir: Path, dirs: tuple[str, ...]) -> Body:
    """compare/compare.json as its table, compare.png, and what the columns mean (folded); nothing for a
    compare.json of another format."""
    folder = Path(run_dir) / "compare"
    path = folder / "compare.json"
    data = read_json(path) if path.is_file() else None
    if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("variants"), dict):
        return Body()
    header, rows = compare_rows(data)
    png = [folder / "compare.png"] if (folder / "compare.png").is_file() else []
    meanings = Table("Columns", ("column", "meaning"), [[c, h] for c, h in data.get("columns", {}).items()])
    masks = Table("Masks the variants derive from", ("mask", "source", "layers", "units"),
                  [[k, m.get("source"), m.get("layers"), m.get("units")] for k, m in data.get("masks", {}).items()])
    return Body(intro=[_compare_note(data)], figures=figures(run_dir, png),
                tables=[Table("Mask variants at equal steps and seeds", tuple(header), rows)],
                folds=[Fold("What the columns mean, and the masks", [meanings, masks])])


def ablate_body(run_dir: Path, dirs: tuple[str, ...]) -> Body:
    """ablate/ablation.json as its table and ratios, ablation.png."""
    from agmask.comparison.table import ablation_lines

    folder = Path(run_dir) / "ablate"
    path = folder / "ablation.json"
    if not path.is_file():
        return Body()
    result = read_json(path)
    rows = []
    for name, s in result.get("sets", {}).items():
        if s.get("n"):
            rows.append([name, s["n"], s["base_mean_logprob"], s["top"]["mean_change"], s["random"]["mean_change"],
                         s["random"]["sd_change"]])
    intro = (f"{result['ablation']}-ablation of the mask's top {result['units']} units (of {result['mask_units']}, by "
             f"{result['ranked_by']}) at {result['positions']} positions in layers {result['layers']}, against "
             f"{result['draws']} draws of as many random units per layer of the same layers. It reads evaluation sets: "
             "a test of the chosen mask, never a selection.")
    png = [folder / "ablation.png"] if (folder / "ablation.png").is_file() else []
    return Body(intro=[intro], summary=ablation_lines(result), figures=figures(run_dir, png),
                tables=[Table("Change of the answer log-prob (nats)", ("set", "n", "base mean", "top units",
                                                                        "random units (mean)", "random (sd)"), rows)])
