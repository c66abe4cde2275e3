"""The run directory: every artefact path that more than one module uses, in one place.

Stages ask `session.paths` (a RunDir at the directory the stage reads and writes: during a stage, its
staging view, see `agmask.transaction`) instead of joining path parts themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
STAGING = ".staging"  # stage transactions: `<run_dir>/.staging/<stage>/`
DONE = "DONE"
STALE = "STALE"  # replaces DONE when an upstream stage reran: the files stay, the report leaves them out


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    def stage(self, name: str) -> Path:
        """The folder of stage `name` (its DIR, e.g. `eval` for evaluate)."""
        from agmask.pipeline import stage_module

        return self.root / stage_module(name).DIR

    def done(self, name: str) -> Path:
        return self.stage(name) / DONE

    def adapter(self, concept: str) -> Path:
        """`adapters/<concept>/`: the PEFT adapter the unlearn stage writes (plus its mask.safetensors)."""
        return self.root / "adapters" / concept

    def staging(self, name: str) -> Path:
        return self.root / STAGING / name

    @property
    def baseline_answers(self) -> Path:
        return self.root / "baseline" / "answers.jsonl"

    @property
    def attribute_scores(self) -> Path:
        return self.root / "attribute" / "scores.safetensors"

    @property
    def attribute_layers(self) -> Path:
        return self.root / "attribute" / "layers.json"

    @property
    def mask(self) -> Path:
        return self.root / "mask" / "mask.safetensors"

    @property
    def eval_metrics(self) -> Path:
        return self.root / "eval" / "metrics.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def regression(self) -> Path:
        """Incremental mode: the top run directory's regression table."""
        return self.root / "regression.json"
