"""The stage driver: the stage registry, the manifest, stage transactions, resume, --force.

A stage is a module in `agmask.stages` with NAME, DIR (its folder in the run dir), DEPENDS (upstream
stages whose artefacts it reads), optional USES (optional stages it reads when they are done), optional
READS_OPTIONS (other stages whose options it works with: part of its input hash; see agmask.currency), optional EXTRA_OUTPUTS
(top-level outputs besides DIR, e.g. `adapters`), optional Config/PRESETS, and `run(cfg, run_dir, session)`.
It is complete when `<DIR>/DONE` holds its current input hash (see `agmask.currency`). A stage runs as a
transaction (see `agmask.transaction`): its outputs replace the old ones only when it succeeds, and
dependants built on the old outputs lose their DONE markers.

Optional stages (OPTIONAL_STAGES) are stages like any other, run by `agmask NAME` or `agmask run --with
NAME`, never by a plain `agmask run`; they sit before `report` in pipeline order (or where OPTIONAL_BEFORE
says: `tune` before `attribute`).

Several processes (`accelerate launch --multi_gpu --num_processes N`): every process runs the driver.
Only the main process writes the manifest, artefacts and DONE markers. A stage with `PARALLEL = True`
runs on every process (it shards its prompts through `agmask.distributed`); the other processes write
into a throwaway mirror of the staging view, so stage code needs no rank checks. Any other stage runs on
the main process while the rest wait.
"""
from __future__ import annotations

import importlib
import shutil
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import ModuleType
from typing import Iterator

from agmask import __version__, distributed, transaction
from agmask.config import RunConfig, nearest
from agmask.currency import (check_upstream, digest, hash_of, input_hash, input_parts, invalidate_dependants,
                             output_hashes, read_done, recorded_inputs, stage_dir, staging_hash, verify_outputs)
from agmask.errors import AgmaskError
from agmask.files import read_json, sha256_text, write_json
from agmask.progress import SILENT, Reporter
from agmask.provenance import api_call, source_commit
from agmask.rundir import DONE, RunDir
from agmask.session import Session

__all__ = ["STAGES", "OPTIONAL_STAGES", "DONE", "all_stages", "ancestors", "stage_module", "stage_dir", "read_done",
           "input_hash", "run_stage", "run_pipeline", "write_manifest", "manifest", "output_hashes"]

# In pipeline order. `agmask run` runs them all.
STAGES = ["baseline", "perturb", "probe", "attribute", "similarity", "mask", "unlearn", "evaluate", "report"]
# Run only when asked (`agmask NAME`, `agmask run --with NAME`); placed before `report` in pipeline order,
# or before the stage OPTIONAL_BEFORE names (tune chooses options for attribute, mask and unlearn).
OPTIONAL_STAGES: list[str] = ["tune", "ablate", "compare"]
OPTIONAL_BEFORE: dict[str, str] = {"tune": "attribute"}
# What produced the results (agmask.provenance): in every DONE marker, and in the manifest for the latest
# invocation that completed a stage (written after the stage commits, so a failed stage changes nothing).
PROVENANCE = ("command", "commit")


def all_stages() -> list[str]:
    """Every stage in pipeline order: the default ones with each optional one before `report` (or before the
    stage OPTIONAL_BEFORE names)."""
    order = list(STAGES)
    for s in OPTIONAL_STAGES:
        if s in order:
            continue
        before = OPTIONAL_BEFORE.get(s, "report")
        order.insert(order.index(before) if before in order else len(order), s)
    return order


def stage_module(name: str) -> ModuleType:
    known = all_stages()
    if name not in known:
        raise AgmaskError(f"unknown stage {name!r}{nearest(name, known)} (stages: {', '.join(known)})")
    return importlib.import_module(f"agmask.stages.{name}")


def ancestors(name: str) -> list[str]:
    """Every stage `name` depends on, directly or not, in pipeline order."""
    seen, todo = set(), list(stage_module(name).DEPENDS)
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo += stage_module(dep).DEPENDS
    return [s for s in all_stages() if s in seen]


def manifest(run_dir: Path) -> dict:
    path = RunDir(run_dir).manifest
    if not path.is_file():
        raise AgmaskError(f"{run_dir} is not a run directory (no manifest.json); start one with `agmask run`")
    return read_json(path)


def write_manifest(session: Session) -> dict:
    """Record model and concept for the run dir (only when they changed); refuse to mix models or concepts
    in one dir. The driver calls it when a stage is about to run: a run that refuses, or finds everything up
    to date, leaves the manifest as it was."""
    from agmask.models import identify

    cfg, path = session.cfg, session.paths.manifest
    model_sha = session.model_sha256 or identify(cfg.model, cfg.seed)
    session.model_sha256 = model_sha
    data = {
        "agmask": __version__,
        "model": {"spec": cfg.model, "sha256": model_sha},
        "concept": {"name": session.spec.name, "source": session.concept.source,
                    "sha256": sha256_text(session.concept.text)},
        "seed": cfg.seed, "budget": cfg.budget, "device": cfg.device, "dtype": cfg.dtype,
        "prior_adapters": [str(p) for p in session.prior_adapters],
        "recipe": {k: v for k, v in session.recipe().record().items() if k in ("name", "trial")},
    }
    old = read_json(path) if path.is_file() else None
    if old:  # the provenance is recorded once a stage has completed (record_provenance), not before
        data.update({key: old[key] for key in PROVENANCE if key in old})
    if old and not cfg.force:
        for key in ("model", "concept"):
            if old[key]["spec" if key == "model" else "name"] != data[key]["spec" if key == "model" else "name"]:
                raise AgmaskError(f"{session.run_dir} was made for {key} {old[key].get('spec') or old[key].get('name')!r}"
                                  f"; use another --run-dir (or --force to start it over)")
    distributed.barrier()  # every process has read the old manifest before the main process replaces it
    if distributed.is_main() and data != old:
        write_json(path, data)
    distributed.barrier()
    return data


def provenance(session: Session, stage: str) -> dict:
    """The command that runs `stage` now (the CLI's argv, else the Python call) and the source's commit."""
    return {"command": session.cfg.command or api_call(session.cfg, [stage]), "commit": source_commit()}


def record_provenance(run_dir: Path, recorded: dict) -> None:
    """After a stage committed: the manifest names the command and commit that last completed a stage."""
    path = RunDir(run_dir).manifest
    data = read_json(path)
    if {key: data.get(key) for key in PROVENANCE} != recorded:
        write_json(path, {**data, **recorded})


def check_manifest(session: Session) -> None:
    """Refuse a run dir made for another model or concept (before any work), and fix the model's sha256."""
    from agmask.models import identify

    session.model_sha256 = identify(session.cfg.model, session.cfg.seed)
    path = session.paths.manifest
    old = read_json(path) if path.is_file() else None
    if old and not session.cfg.force:
        if old.get("model", {}).get("spec") != session.cfg.model:
            raise AgmaskError(f"{session.run_dir} was made for model {old['model'].get('spec')!r}; use another "
                              "--run-dir (or --force to start it over)")
        if old.get("concept", {}).get("name") != session.spec.name:
            raise AgmaskError(f"{session.run_dir} was made for concept {old['concept'].get('name')!r}; use another "
                              "--run-dir (or --force to start it over)")


@contextmanager
def _private_run_dir(session: Session, module: ModuleType) -> Iterator[None]:
    """On a non-main process: point the session at a throwaway mirror of the main process's staging view.

    Upstream artefacts are symlinks to the real ones; the stage's own outputs are copies (so it
    resumes exactly like the main process, e.g. eval/metrics.json) and are discarded afterwards.
    """
    view = session.run_dir
    with tempfile.TemporaryDirectory(prefix=f"agmask-rank{distributed.rank()}-") as tmp:
        mirror = Path(tmp) / view.name
        mirror.mkdir()
        own = set(transaction.own_outputs(module))
        for entry in view.iterdir():
            target = mirror / entry.name
            if entry.name not in own:
                target.symlink_to(entry.resolve())
            elif entry.is_dir():
                shutil.copytree(entry, target, symlinks=True)
            else:
                shutil.copy2(entry, target)
        session.run_dir = mirror
        try:
            yield
        finally:
            session.run_dir = view


@contextmanager
def _staged(session: Session, view: Path) -> Iterator[None]:
    """The session reads and writes the staging view while the stage runs."""
    real = session.run_dir
    session.run_dir = view
    try:
        yield
    finally:
        session.run_dir = real


def run_stage(session: Session, name: str) -> bool:
    """Run one stage unless it is complete. Returns True if it ran."""
    module = stage_module(name)
    real = session.run_dir
    check_upstream(session, name)  # upstream current and intact, or one line naming the stage to rerun
    parts = input_parts(session, name)
    expected = hash_of(parts)
    done = read_done(real, name)
    up_to_date = bool(done and done.get("input_hash") == expected and not session.cfg.force)
    if up_to_date:
        verify_outputs(real, name, done)  # "up to date" only with intact artefacts
    if distributed.broadcast(up_to_date):  # every process follows the main process's decision
        session.reporter.log(f"{name}: up to date, skipped")
        return False
    write_manifest(session)  # the run dir records what this stage runs with (unchanged: not rewritten)
    parallel = getattr(module, "PARALLEL", False) and distributed.world_size() > 1
    main = distributed.is_main()
    view = RunDir(real).staging(name)
    if main:
        transaction.prepare(real, module, staging_hash(module, parts), fresh=session.cfg.force)
    distributed.barrier()  # the view exists before the other processes mirror it
    start = time.perf_counter()
    with _staged(session, view):
        mirror = _private_run_dir(session, module) if parallel and not main else nullcontext()
        with mirror:
            distributed.barrier()  # everyone has mirrored its inputs before the main process writes
            error = None
            if main or parallel:
                try:
                    module.run(session.cfg, session.run_dir, session)
                except Exception as e:
                    if parallel or distributed.world_size() == 1:
                        raise
                    error = e  # tell the waiting processes before failing
            if not parallel and distributed.broadcast(None if error is None else str(error)) is not None:
                if error is not None:
                    raise error
                raise AgmaskError(f"stage {name} failed on the main process")
    elapsed = time.perf_counter() - start
    if main:
        outputs = output_hashes(view, module)
        made_by = provenance(session, name)
        transaction.commit(real, view, module, {
            "stage": name, "input_hash": expected, "inputs": recorded_inputs(parts),
            "stage_config": parts["stage_config"], "seconds": round(elapsed, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **made_by, "outputs": outputs})
        record_provenance(real, made_by)
        if done is None or digest(done.get("outputs")) != digest(outputs):
            stale = invalidate_dependants(real, name)
            if stale:
                session.reporter.log(f"{name}: its results changed, so {', '.join(stale)} must run again "
                                     "(`agmask run` does it)")
    distributed.barrier()  # no process reads this DONE marker before it exists
    session.reporter.log(f"{name}: done in {elapsed:.1f} s")
    return True


def run_pipeline(cfg: RunConfig, stages: list[str] | None = None, reporter: Reporter = SILENT) -> list[Path]:
    """Run stages (default: every default stage) for each concept; returns the run directories written.

    Everything is validated first (stage names, every stage's options, device, run directory, concept
    files, model); nothing is written before that, the manifest included."""
    from agmask.preflight import preflight

    if cfg.command is None:  # called from Python: record the call itself
        cfg = cfg.model_copy(update={"command": api_call(cfg, stages)})
    stages = list(stages or STAGES)
    for s in stages:
        stage_module(s)  # unknown names fail before any work
    order = all_stages()
    stages = sorted(dict.fromkeys(stages), key=order.index)
    concepts = preflight(cfg, {s: stage_module(s) for s in order})
    distributed.init(cfg.device)
    if not distributed.is_main():
        reporter = SILENT  # one set of progress bars and logs: the main process's
    if distributed.world_size() > 1:
        if distributed.is_main():  # the model cache is built once, before any process loads from it
            from agmask.models import prefetch

            prefetch(cfg.model, log=reporter.log)
        distributed.barrier()
    if len(concepts) == 1:
        session = Session(cfg, concepts[0], Path(cfg.run_dir), reporter)
        if distributed.is_main():
            for finished in transaction.recover(session.run_dir):
                reporter.log(f"{finished}: finished swapping in its outputs (interrupted last time)")
        distributed.barrier()
        check_manifest(session)
        for s in stages:
            run_stage(session, s)
        return [session.run_dir]
    from agmask.incremental import run_incremental

    return run_incremental(cfg, stages, reporter, concepts)

