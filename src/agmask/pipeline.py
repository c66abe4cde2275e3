"""The stage driver: run directory, manifest, DONE markers keyed by input hashes, resume, --force.

A stage is a module in `agmask.stages` with NAME, DIR (its folder in the run dir), DEPENDS
(upstream stages whose artefacts it reads), optional Config/PRESETS, and `run(cfg, run_dir, session)`.
It is complete when `<DIR>/DONE` holds its current input hash: sha256 of the resolved config,
the concept file's contents, the model sha256 and the output hashes of its upstream stages.

Several processes (`accelerate launch --multi_gpu --num_processes N`): every process runs the driver.
Only the main process writes the manifest, artefacts and DONE markers. A stage with `PARALLEL = True`
runs on every process (it shards its prompts through `agmask.distributed`); the other processes write
into a throwaway mirror of the run dir, so stage code needs no rank checks. Any other stage runs on
the main process while the rest wait.
"""
from __future__ import annotations

import importlib
import json
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Iterator

from agmask import __version__, distributed
from agmask.config import RunConfig, config_json, resolve_stage_config
from agmask.errors import AgmaskError
from agmask.files import read_json, sha256_file, sha256_text, write_json
from agmask.progress import SILENT, Reporter
from agmask.session import Session

# In pipeline order. `agmask run` runs them all.
STAGES = ["baseline", "perturb", "probe", "attribute", "similarity", "mask", "unlearn", "evaluate", "report"]
DONE = "DONE"


def stage_module(name: str) -> ModuleType:
    if name not in STAGES:
        raise AgmaskError(f"unknown stage {name!r} (stages: {', '.join(STAGES)})")
    return importlib.import_module(f"agmask.stages.{name}")


def stage_dir(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / stage_module(name).DIR


def read_done(run_dir: Path, name: str) -> dict | None:
    path = stage_dir(run_dir, name) / DONE
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None  # a damaged marker means "not done"


def input_hash(session: Session, name: str) -> str:
    """What a stage's result depends on; any change reruns it."""
    module = stage_module(name)
    upstream = {}
    for dep in module.DEPENDS:
        done = read_done(session.run_dir, dep)
        if done is None:
            raise AgmaskError(f"stage {name} needs stage {dep} first: run `agmask {dep}` (or `agmask run`) "
                              f"with --run-dir {session.run_dir}")
        upstream[dep] = done["outputs"]
    payload = {
        "stage": name,
        "agmask": __version__,
        "core": session.cfg.core(),
        "stage_config": config_json(resolve_stage_config(module, session.cfg)),
        "concept": sha256_text(session.concept.text),
        "model_sha256": manifest(session.run_dir)["model"]["sha256"],
        "prior_adapters": [str(p) for p in session.prior_adapters],
        "upstream": upstream,
    }
    return sha256_text(json.dumps(payload, sort_keys=True))


def manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        raise AgmaskError(f"{run_dir} is not a run directory (no manifest.json); start one with `agmask run`")
    return read_json(path)


def write_manifest(session: Session) -> dict:
    """Record model and concept for the run dir; refuse to mix models or concepts in one dir."""
    from agmask.models import identify

    cfg, path = session.cfg, session.run_dir / "manifest.json"
    model_sha = identify(cfg.model, cfg.seed)
    data = {
        "agmask": __version__,
        "model": {"spec": cfg.model, "sha256": model_sha},
        "concept": {"name": session.spec.name, "source": session.concept.source,
                    "sha256": sha256_text(session.concept.text)},
        "seed": cfg.seed, "budget": cfg.budget, "device": cfg.device, "dtype": cfg.dtype,
        "prior_adapters": [str(p) for p in session.prior_adapters],
    }
    if path.is_file() and not cfg.force:
        old = read_json(path)
        for key in ("model", "concept"):
            if old[key]["spec" if key == "model" else "name"] != data[key]["spec" if key == "model" else "name"]:
                raise AgmaskError(f"{session.run_dir} was made for {key} {old[key].get('spec') or old[key].get('name')!r}"
                                  f"; use another --run-dir (or --force to start it over)")
    distributed.barrier()  # every process has read the old manifest before the main process replaces it
    if distributed.is_main():
        write_json(path, data)
    distributed.barrier()
    return data


def output_hashes(run_dir: Path, module: ModuleType) -> dict[str, str]:
    outputs = {}
    for rel in [module.DIR, *getattr(module, "EXTRA_OUTPUTS", [])]:
        root = Path(run_dir) / rel
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and p.name != DONE)
        for f in files:
            outputs[str(f.relative_to(run_dir))] = sha256_file(f)
    return outputs


def _own_outputs(module: ModuleType) -> set[str]:
    """Top-level entries of the run dir that a stage writes."""
    return {Path(rel).parts[0] for rel in [module.DIR, *getattr(module, "EXTRA_OUTPUTS", [])]}


@contextmanager
def _private_run_dir(session: Session, module: ModuleType) -> Iterator[None]:
    """On a non-main process: point the session at a throwaway mirror of the run dir for the stage.

    Upstream artefacts are symlinks to the real ones; the stage's own outputs are copies (so it
    resumes exactly like the main process, e.g. eval/metrics.json) and are discarded afterwards.
    """
    real = session.run_dir
    with tempfile.TemporaryDirectory(prefix=f"agmask-rank{distributed.rank()}-") as tmp:
        mirror = Path(tmp) / real.name
        mirror.mkdir()
        own = _own_outputs(module)
        for entry in real.iterdir():
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
            session.run_dir = real


def run_stage(session: Session, name: str) -> bool:
    """Run one stage unless it is complete. Returns True if it ran."""
    module = stage_module(name)
    expected = input_hash(session, name)
    done = read_done(session.run_dir, name)
    up_to_date = bool(done and done.get("input_hash") == expected and not session.cfg.force)
    if distributed.broadcast(up_to_date):  # every process follows the main process's decision
        session.reporter.log(f"{name}: up to date, skipped")
        return False
    parallel = getattr(module, "PARALLEL", False) and distributed.world_size() > 1
    main = distributed.is_main()
    marker = stage_dir(session.run_dir, name) / DONE
    mirror = _private_run_dir(session, module) if parallel and not main else _nothing()
    start = time.perf_counter()
    with mirror:
        distributed.barrier()  # everyone has read (and mirrored) its inputs before the main process writes
        if main:
            marker.unlink(missing_ok=True)  # a failure from here on leaves the stage not done
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
        write_json(marker, {"stage": name, "input_hash": expected, "seconds": round(elapsed, 2),
                            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                            "outputs": output_hashes(session.run_dir, module)})
    distributed.barrier()  # no process reads this DONE marker before it exists
    session.reporter.log(f"{name}: done in {elapsed:.1f} s")
    return True


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def run_pipeline(cfg: RunConfig, stages: list[str] | None = None, reporter: Reporter = SILENT) -> list[Path]:
    """Run stages (default: all) for each concept; returns the run directories written."""
    stages = stages or STAGES
    for s in stages:  # unknown names and bad options fail before any work
        resolve_stage_config(stage_module(s), cfg)
    distributed.init(cfg.device)
    if not distributed.is_main():
        reporter = SILENT  # one set of progress bars and logs: the main process's
    if distributed.world_size() > 1:
        if distributed.is_main():  # the model cache is built once, before any process loads from it
            from agmask.models import prefetch

            prefetch(cfg.model, log=reporter.log)
        distributed.barrier()
    if len(cfg.concepts) == 1:
        session = Session.create(cfg, reporter=reporter)
        write_manifest(session)
        for s in stages:
            run_stage(session, s)
        return [session.run_dir]
    from agmask.incremental import run_incremental

    return run_incremental(cfg, stages, reporter)
