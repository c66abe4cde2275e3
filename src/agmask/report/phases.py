"""Report sections for the write-up's phases 1-5, each built from whatever artefacts its stage left.

A section lists every `*.png` of its folders (the path as caption) and every small JSON file as a folded
table; it is absent when none of its folders has anything to show. The evaluation (phase 6) is in
`evaluation.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agmask.report.parts import Body, figures, json_fold


def _fisher(p: Path) -> bool:
    return "fisher" in p.name.lower()


@dataclass(frozen=True)
class Phase:
    anchor: str
    title: str
    dirs: tuple[str, ...]
    keep: Callable[[Path], bool] = lambda p: True  # which files of those folders belong here

    def build(self, run_dir: Path, dirs: tuple[str, ...]) -> Body:
        """The figures and JSON files of `dirs` (this phase's folders whose results are current)."""
        pngs, jsons = [], []
        for d in dirs:
            folder = run_dir / d
            if folder.is_dir():
                pngs += sorted(p for p in folder.glob("*.png") if self.keep(p))
                jsons += sorted(p for p in folder.glob("*.json") if self.keep(p))
        return Body(figures=figures(run_dir, pngs), folds=[json_fold(p) for p in jsons])


PHASES = (
    Phase("baseline", "Baseline: what the base model knows", ("baseline",)),
    Phase("perturbation", "Phase 1: prompt perturbation stability", ("perturb",)),
    Phase("attribution", "Phase 2: activation probing, saliency and gradient sensitivity", ("probe", "attribute"),
          lambda p: not _fisher(p)),
    Phase("similarity", "Phase 3: semantic similarity vs activation structure", ("similarity",)),
    Phase("fisher", "Phase 4: Fisher information", ("attribute",), _fisher),
    Phase("training", "Phase 5: activation-guided masked LoRA training", ("mask", "unlearn")),
)
