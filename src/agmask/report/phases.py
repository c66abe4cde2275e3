"""Report sections for the write-up's phases 1-5, each built from whatever artefacts its stage left.

A section lists every `*.png` of its folders (file name as caption) and every small JSON file as a
table; it is absent when none of its folders has anything to show. The phase-6 evaluation section
lives in `evaluation.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agmask.report.html import figure, json_table, section


def _fisher(p: Path) -> bool:
    return "fisher" in p.name.lower()


@dataclass(frozen=True)
class Phase:
    anchor: str
    title: str
    dirs: tuple[str, ...]
    keep: Callable[[Path], bool] = lambda p: True  # which files of those folders belong here


PHASES = (
    Phase("baseline", "Baseline: what the base model knows", ("baseline",)),
    Phase("perturbation", "Phase 1: prompt perturbation stability", ("perturb",)),
    Phase("attribution", "Phase 2: activation probing, saliency and gradient sensitivity", ("probe", "attribute"),
          lambda p: not _fisher(p)),
    Phase("similarity", "Phase 3: semantic similarity vs activation structure", ("similarity",)),
    Phase("fisher", "Phase 4: Fisher information", ("attribute",), _fisher),
    Phase("training", "Phase 5: activation-guided masked LoRA training", ("mask", "unlearn")),
)


def artefacts(run_dir: Path, phase: Phase) -> tuple[list[Path], list[Path]]:
    """(PNG files, JSON files) of the phase, sorted, DONE markers excluded."""
    pngs, jsons = [], []
    for d in phase.dirs:
        folder = run_dir / d
        if not folder.is_dir():
            continue
        pngs += sorted(p for p in folder.glob("*.png") if phase.keep(p))
        jsons += sorted(p for p in folder.glob("*.json") if phase.keep(p))
    return pngs, jsons


def phase_section(run_dir: Path, phase: Phase) -> str:
    pngs, jsons = artefacts(run_dir, phase)
    if not pngs and not jsons:
        return ""
    body = "".join(figure(p, str(p.relative_to(run_dir))) for p in pngs)
    body += "".join(json_table(p) for p in jsons)
    return section(phase.title, body, phase.anchor)

