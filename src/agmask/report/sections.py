"""The report's sections after the verdict, in page order: a small registry.

A section names the run-dir folders it reads; a folder whose stage is not current (rerun since, or a
damaged file) is withheld from it, and a section with none of its folders left, or nothing to show, is
absent. An optional stage's section drops in by adding one entry here: its builder reads its own
folder and returns a `parts.Body`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from agmask.report import recommend
from agmask.report.evaluation import evaluation_body
from agmask.report.examples import examples_body
from agmask.report.optional import compare_body, tune_body
from agmask.report.parts import Body
from agmask.report.phases import PHASES


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str
    dirs: tuple[str, ...]  # run-dir folders it reads
    build: Callable[[Path, tuple[str, ...]], Body]  # (run dir, the folders of `dirs` that are current) -> body


SECTIONS: tuple[Section, ...] = (
    Section("examples", "Before / after example replies", ("eval", "baseline"), examples_body),
    Section("evaluation", "Phase 6: evaluation before / after unlearning", ("eval",), evaluation_body),
    Section(recommend.ANCHOR, recommend.TITLE, ("eval", "perturb"), recommend.recommend_body),
    Section("compare", "Method comparison (agmask compare)", ("compare",), compare_body),
    Section("tune", "Recipe search (agmask tune)", ("tune",), tune_body),
    *(Section(p.anchor, p.title, p.dirs, p.build) for p in PHASES),
)


@dataclass(frozen=True)
class Built:
    anchor: str
    title: str
    body: Body


def build_sections(run_dir: Path, withheld: set[str], sections: tuple[Section, ...] = SECTIONS) -> list[Built]:
    """Every section with something to show, built from its folders that are not withheld."""
    out = []
    for s in sections:
        dirs = tuple(d for d in s.dirs if d not in withheld and (run_dir / d).is_dir())
        body = s.build(run_dir, dirs) if dirs else Body()
        if body:
            out.append(Built(s.anchor, s.title, body))
    return out
