"""A finished tiny run directory for the driver's reliability tests, and helpers to copy and compare one."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from agmask.config import RunConfig
from agmask.files import read_json, write_json
from agmask.pipeline import run_pipeline

# Every stage, in seconds on a tiny model; the mask is a strict subset (12 of 160 neurons).
FAST = {"mask": {"k": 12, "num_layers": 2}, "unlearn": {"steps": 2, "batch_size": 2},
        "evaluate": {"corpus_tokens": 128, "relearn_steps": 2}, "similarity": {"permutations": 9}}


def fast_args() -> list[str]:
    """FAST as CLI --set options."""
    import json

    return [a for stage, opts in FAST.items() for k, v in opts.items()
            for a in ("--set", f"{stage}.{k}={json.dumps(v)}")]


def finished_run(root: Path, concept: Path, model: str = "tiny:llama") -> RunConfig:
    """Run every stage on a copy of `concept` under `root`; returns the config (its run_dir is `root/run`)."""
    root.mkdir(parents=True, exist_ok=True)
    concept_copy = root / "concept.yaml"
    shutil.copy(concept, concept_copy)
    cfg = RunConfig(model=model, concepts=[str(concept_copy)], run_dir=root / "run", overrides=FAST)
    run_pipeline(cfg)
    return cfg


def copy_run(cfg: RunConfig, dest: Path) -> RunConfig:
    """A copy of a finished run directory (and its concept file) under `dest`, and its config."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(cfg.run_dir, dest / "run", symlinks=True)
    concept = dest / "concept.yaml"
    shutil.copy(cfg.concepts[0], concept)
    manifest = read_json(dest / "run" / "manifest.json")
    manifest["concept"]["source"] = str(concept)  # as if the run had been made with the copy
    write_json(dest / "run" / "manifest.json", manifest)
    return cfg.model_copy(update={"run_dir": dest / "run", "concepts": [str(concept)]})


def snapshot(run_dir: Path) -> dict[str, str]:
    """sha256 of every file of a run directory (the staging area excluded)."""
    run_dir = Path(run_dir)
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and ".staging" not in p.relative_to(run_dir).parts}


# unlearn's defaults before the first full `agmask tune` (docs/TUNING.md): tests that pin a code path recorded
# under them (loss rows, the option sets, the recommendation terms' effect) train with these.
PLAIN_NPO = {"first_token_weight": 0.0, "first_token_margin": 0.0, "retain_weight": 1.0, "forget_all_leads": False,
             "retain_all_leads": False, "retain_without_concept_start": False}
