"""Stage 8, report: one self-contained `report.html` built from the run directory's JSON, JSONL and PNG
files only (figures inline as base64 PNG, CSS inline, no JavaScript). It never loads a model."""
from __future__ import annotations

import dataclasses
import time
from importlib import resources
from pathlib import Path

from agmask.currency import real_run_dir
from agmask.errors import AgmaskError
from agmask.files import read_json, write_text
from agmask.report.compare import ANCHOR as COMPARE_ANCHOR
from agmask.report.compare import TITLE as COMPARE_TITLE
from agmask.report.compare import compare_section
from agmask.report.evaluation import evaluation_section
from agmask.report.html import esc, table
from agmask.report.phases import PHASES, phase_section
from agmask.report.recommend import ANCHOR as RECOMMEND_ANCHOR
from agmask.report.recommend import TITLE as RECOMMEND_TITLE
from agmask.report.recommend import recommend_section

REPORT = "report.html"

__all__ = ["build_report", "REPORT"]


def _header(run_dir: Path) -> str:
    manifest = read_json(run_dir / "manifest.json")
    model, concept = manifest.get("model", {}), manifest.get("concept", {})
    rows = [["model", model.get("spec")], ["model sha256", model.get("sha256")], ["concept", concept.get("name")],
            ["concept source", concept.get("source")], ["seed", manifest.get("seed")],
            ["budget", manifest.get("budget")], ["agmask", manifest.get("agmask")]]
    if manifest.get("prior_adapters"):
        rows.append(["earlier adapters", manifest["prior_adapters"]])
    title = f"agmask report: forgetting {concept.get('name', '?')} in {model.get('spec', '?')}"
    return title, table(["", ""], rows, "kv")


def current_dirs(run_dir: Path) -> tuple[set[str], list[str]]:
    """(folders of the stages whose results are current, one note per stage left out and why)."""
    from agmask.currency import current_stages, stage_dir

    status = current_stages(run_dir)
    shown = {stage_dir(run_dir, s).name for s, why in status.items() if why is None}
    return shown, [f"{s}: {why}" for s, why in status.items() if why is not None and s != "report"]


def build_report(run_dir: str | Path) -> Path:
    """Write `<run_dir>/report.html` from the artefacts of the stages whose results are current (a stage
    rerun since, or with a damaged file, is left out and named); returns its path."""
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").is_file():
        raise AgmaskError(f"{run_dir} is not a run directory (no manifest.json); run `agmask run` first")
    title, header = _header(run_dir)
    shown, left_out = current_dirs(run_dir)
    phases = [dataclasses.replace(p, dirs=tuple(d for d in p.dirs if d in shown)) for p in PHASES]
    sections = [(p.anchor, p.title, phase_section(run_dir, p)) for p in phases]
    if "eval" in shown:
        sections.append(("evaluation", "Phase 6: evaluation before / after unlearning", evaluation_section(run_dir)))
        sections.append((RECOMMEND_ANCHOR, RECOMMEND_TITLE, recommend_section(run_dir)))
    if "compare" in shown:
        sections.append((COMPARE_ANCHOR, COMPARE_TITLE, compare_section(run_dir)))
    sections = [s for s in sections if s[2]]
    if left_out:
        header += '<p class="note">Left out, not current: ' + "; ".join(esc(n) for n in left_out) + "</p>"
    nav = "<nav><ul>" + "".join(f'<li><a href="#{esc(a)}">{esc(t)}</a></li>' for a, t, _ in sections) + "</ul></nav>"
    css = (resources.files("agmask.report") / "style.css").read_text(encoding="utf-8")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{css}</style></head><body><h1>{esc(title)}</h1>{header}{nav}"
            + "".join(body for _, _, body in sections)
            + f'<footer class="note">Built {esc(time.strftime("%Y-%m-%d %H:%M:%S"))} from the artefacts in '
              f"{esc(real_run_dir(run_dir).resolve())}.</footer></body></html>\n")
    out = run_dir / REPORT
    write_text(out, page)
    return out
