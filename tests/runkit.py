"""A finished tiny run directory (the shared `finished_tiny_run` fixture makes one), and helpers to copy and
compare one."""
from __future__ import annotations

import hashlib
import importlib.util
import shlex
import sys
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

from agmask.config import RunConfig
from agmask.files import read_json, write_json

# Every stage, in seconds on a tiny model; the mask is a strict subset (12 of 160 neurons).
FAST = {"mask": {"k": 12, "num_layers": 2}, "unlearn": {"steps": 2, "batch_size": 2},
        "evaluate": {"corpus_tokens": 128, "relearn_steps": 2}, "similarity": {"permutations": 9}}


def fast_args() -> list[str]:
    """FAST as CLI --set options."""
    import json

    return [a for stage, opts in FAST.items() for k, v in opts.items()
            for a in ("--set", f"{stage}.{k}={json.dumps(v)}")]


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models on one thread: with other processes on the 2 cores, torch's thread pool makes a tiny
    forward ~50x slower (measured 0.39 s vs 0.0075 s)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class FinishedRun(NamedTuple):
    cfg: RunConfig  # what the run was made with (its run_dir is `root/run`)
    command: str  # the command line that made it, as its DONE markers record it


def cli_finished_run(root: Path, concept: Path, model: str = "tiny:llama") -> FinishedRun:
    """`agmask run` (in this process) of every stage with FAST on a copy of `concept` under `root`."""
    from agmask.cli.main import main

    root.mkdir(parents=True, exist_ok=True)
    concept_copy = root / "concept.yaml"
    shutil.copy(concept, concept_copy)
    argv = ["run", "--model", model, "--concept", str(concept_copy), "--run-dir", str(root / "run"), "-q", *fast_args()]
    assert main(argv) == 0
    cfg = RunConfig(model=model, concepts=[str(concept_copy)], run_dir=root / "run", overrides=FAST)
    return FinishedRun(cfg, shlex.join(["agmask", *argv]))


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


BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str):
    """A bench/ script as a module (its sibling benchkit importable)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def number_differences(a, b, tol: float = 1e-4) -> list[str]:
    """Where two results trees differ beyond `tol` (bench/same_numbers.py's rule; timings skipped). Forwards
    that reuse cached prefixes differ from the same forwards run whole by float rounding (~1e-7), so a
    resumed run, which caches other prefixes, agrees with an uninterrupted one to this tolerance."""
    return bench_module("same_numbers").differences(a, b, tol)


def snapshot(run_dir: Path) -> dict[str, str]:
    """sha256 of every file of a run directory (the staging area excluded)."""
    run_dir = Path(run_dir)
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and ".staging" not in p.relative_to(run_dir).parts}


# unlearn's defaults before the first full `agmask tune` (docs/TUNING.md): tests that pin a code path recorded
# under them (loss rows, the option sets, the recommendation terms' effect) train with these.
PLAIN_NPO = {"first_token_weight": 0.0, "first_token_margin": 0.0, "retain_weight": 1.0, "forget_all_leads": False,
             "retain_all_leads": False, "retain_without_concept_start": False, "keep_rest_weight": 0.0,
             "preference_weight": 0.0}
