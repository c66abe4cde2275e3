"""Stage 8, report: one self-contained `report.html` built from the run directory's JSON, JSONL and PNG
files only (figures inline as base64 PNG, CSS inline, no JavaScript). It never loads a model.

The page is the Jinja2 template `templates/report.html.j2`: the verdict card first (`verdict.py`: every
target of `agmask.targets`), then the sections of `sections.SECTIONS` (example replies, the evaluation's
figures and the tables each metric declares, recommendations, optional stages, the phases' figures), JSON
dumps folded. Stages whose results are not current are left out and named.
"""
from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from agmask.currency import real_run_dir
from agmask.errors import AgmaskError
from agmask.evaluate.tables import Table
from agmask.files import read_json, write_text
from agmask.report.html import cell
from agmask.report.parts import Fold
from agmask.report.sections import build_sections
from agmask.report.verdict import build_verdict

REPORT = "report.html"
TEMPLATE = "report.html.j2"

__all__ = ["build_report", "REPORT"]


def current_dirs(run_dir: Path) -> tuple[set[str], list[str]]:
    """(folders of the stages whose results are not current, one note per stage left out and why)."""
    from agmask.currency import current_stages, stage_dir

    status = current_stages(run_dir)
    withheld = {stage_dir(run_dir, s).name for s, why in status.items() if why is not None}
    return withheld, [f"{s}: {why}" for s, why in status.items() if why is not None and s != "report"]


def run_facts(manifest: dict) -> tuple[str, Fold]:
    """(the page title, the run's details folded)."""
    model, concept = manifest.get("model", {}), manifest.get("concept", {})
    rows = [["model", model.get("spec")], ["model sha256", model.get("sha256")], ["concept", concept.get("name")],
            ["concept source", concept.get("source")], ["seed", manifest.get("seed")],
            ["budget", manifest.get("budget")], ["agmask", manifest.get("agmask")]]
    if manifest.get("prior_adapters"):
        rows.append(["earlier adapters", manifest["prior_adapters"]])
    title = f"agmask report: forgetting {concept.get('name', '?')} in {model.get('spec', '?')}"
    return title, Fold("Run: model, concept, seed, budget", [Table("manifest.json", ("key", "value"), rows)])


def environment() -> Environment:
    env = Environment(loader=PackageLoader("agmask.report", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["cell"] = cell
    return env


def build_report(run_dir: str | Path) -> Path:
    """Write `<run_dir>/report.html` from the artefacts of the stages whose results are current (a stage
    rerun since, or with a damaged file, is left out and named); returns its path."""
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").is_file():
        raise AgmaskError(f"{run_dir} is not a run directory (no manifest.json); run `agmask run` first")
    manifest = read_json(run_dir / "manifest.json")
    title, facts = run_facts(manifest)
    withheld, left_out = current_dirs(run_dir)
    usable = {p.name for p in run_dir.iterdir() if p.is_dir()} - withheld
    page = environment().get_template(TEMPLATE).render(
        title=title, manifest=manifest, facts=facts, left_out=left_out, verdict=build_verdict(run_dir, usable),
        sections=build_sections(run_dir, withheld), css=(resources.files("agmask.report") / "style.css").read_text(
            encoding="utf-8"),
        built=time.strftime("%Y-%m-%d %H:%M:%S"), source=str(real_run_dir(run_dir).resolve()))
    out = run_dir / REPORT
    write_text(out, page)
    return out
