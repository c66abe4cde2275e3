"""Stage transactions: a stage writes into a staging view and its outputs replace the old ones only on success.

The view `<run>/.staging/<stage>/` holds a symlink to every entry of the run directory except the stage's
own outputs (its DIR and EXTRA_OUTPUTS, e.g. `adapters/`), which start empty. The stage runs with the view
as its run directory: it reads upstream artefacts through the links and writes its own outputs into the
view. On success `commit` writes the DONE marker into the view, records a journal, and swaps every output
into the run directory (DIR, which carries DONE, last). A crash during the swap is finished by `recover`
on the next start, from the journal. A failure before the journal leaves the run directory untouched.

A stage with `RESUMABLE = True` (evaluate: it resumes metric by metric) keeps an interrupted view whose
recorded input hash is the present one, and continues in it; any other stage starts from an empty view.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import ModuleType

from agmask.files import read_json, write_json
from agmask.rundir import DONE, STAGING, RunDir

JOURNAL = "COMMIT.json"  # in the view: the outputs to swap in; present only while a commit is under way
MARKER = "STAGING.json"  # in the view: the stage and input hash it is staging


def own_outputs(module: ModuleType) -> list[str]:
    """The stage's outputs as top-level entries of the run directory, DIR last."""
    extra = [rel for rel in getattr(module, "EXTRA_OUTPUTS", []) if rel != module.DIR]
    for rel in [module.DIR, *extra]:
        if len(Path(rel).parts) != 1:
            raise ValueError(f"stage {module.NAME}: output {rel!r} must be a top-level entry of the run directory")
    return [*extra, module.DIR]


def prepare(run_dir: Path, module: ModuleType, input_hash: str, fresh: bool) -> Path:
    """Create (or, for a resumable stage with the same input hash, reuse) the stage's staging view."""
    run_dir = Path(run_dir)
    view = RunDir(run_dir).staging(module.NAME)
    marker = view / MARKER
    keep = (not fresh and getattr(module, "RESUMABLE", False) and marker.is_file()
            and read_json(marker).get("input_hash") == input_hash and not (view / JOURNAL).exists())
    if view.exists() and not keep:
        shutil.rmtree(view)
    view.mkdir(parents=True, exist_ok=True)
    own = set(own_outputs(module))
    for entry in view.iterdir():  # links from an interrupted attempt: the run directory may have changed since
        if entry.is_symlink():
            entry.unlink()
    for entry in run_dir.iterdir():
        if entry.name.startswith(".") or entry.name in own:
            continue
        (view / entry.name).symlink_to(entry.resolve())
    (view / module.DIR).mkdir(exist_ok=True)
    write_json(marker, {"stage": module.NAME, "input_hash": input_hash})
    return view


def commit(run_dir: Path, view: Path, module: ModuleType, done: dict) -> None:
    """Write the DONE marker into the view, then swap the stage's outputs into the run directory."""
    write_json(Path(view) / module.DIR / DONE, done)
    produced = [rel for rel in own_outputs(module) if (Path(view) / rel).exists()]
    write_json(Path(view) / JOURNAL, {"stage": module.NAME, "outputs": own_outputs(module), "produced": produced})
    _finish(Path(run_dir), Path(view))


def _finish(run_dir: Path, view: Path) -> None:
    """Swap the journal's outputs in (idempotent: a second call after a crash completes the first)."""
    journal = read_json(view / JOURNAL)
    trash = run_dir / STAGING / f".trash-{journal['stage']}"
    trash.mkdir(parents=True, exist_ok=True)
    for rel in journal["outputs"]:
        staged, target = view / rel, run_dir / rel
        if rel in journal["produced"] and not (staged.exists() and not staged.is_symlink()):
            continue  # swapped in before a crash
        if target.exists() or target.is_symlink():
            _remove(trash / rel)
            os.replace(target, trash / rel)
        if rel in journal["produced"]:
            os.replace(staged, target)
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(view, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def recover(run_dir: Path) -> list[str]:
    """Finish every commit a crash interrupted; returns the stages whose outputs were swapped in."""
    staging = Path(run_dir) / STAGING
    finished = []
    if staging.is_dir():
        for view in sorted(staging.iterdir()):
            if (view / JOURNAL).is_file():
                finished.append(read_json(view / JOURNAL)["stage"])
                _finish(Path(run_dir), view)
            elif view.name.startswith(".trash-"):
                shutil.rmtree(view, ignore_errors=True)
    return finished
