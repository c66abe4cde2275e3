"""DONE markers and the checks that a stage's inputs are current and its artefacts intact.

A stage is complete when `<DIR>/DONE` holds its current input hash: sha256 of the resolved config, the
concept file's contents, the model sha256 and the output hashes of its upstream stages. The marker also
records the sha256 of every output file and a digest of each input, so that:

- a stage run alone refuses to start on an upstream stage that is not current for the present concept,
  model and options (`check_upstream`, the same hash `agmask run` uses), naming the stage to rerun;
- an artefact that changed after it was written (truncated, edited, deleted) is reported in one line
  naming the file and the stage to rerun (`verify_outputs`), never read;
- a stage's dependants lose their DONE markers when its outputs change (`invalidate_dependants`), and the
  report shows only stages whose recorded inputs are the ones on disk (`current_stages`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from types import ModuleType

from agmask import __version__
from agmask.errors import StageError
from agmask.files import read_json, sha256_file, sha256_text, write_json
from agmask.rundir import DONE, STALE, RunDir
from agmask.scoring.encode import SCORING_VERSION


def _registry():
    from agmask import pipeline  # late: the registry may be patched (tests add stages)

    return pipeline


def stage_dir(run_dir: Path, name: str) -> Path:
    return RunDir(run_dir).stage(name)


def read_done(run_dir: Path, name: str) -> dict | None:
    path = stage_dir(run_dir, name) / DONE
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # a damaged marker means "not done"


def digest(value) -> str:
    return sha256_text(json.dumps(value, sort_keys=True, default=str))


def uses(module: ModuleType) -> tuple[str, ...]:
    """Optional upstream stages: read (and hashed) when they are done, not required."""
    return tuple(u for u in getattr(module, "USES", ()) if u in _registry().all_stages())


def output_hashes(run_dir: Path, module: ModuleType) -> dict[str, str]:
    outputs = {}
    for rel in [module.DIR, *getattr(module, "EXTRA_OUTPUTS", [])]:
        root = Path(run_dir) / rel
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*")
                                                     if p.is_file() and p.name not in (DONE, STALE))
        for f in files:
            outputs[str(f.relative_to(run_dir))] = sha256_file(f)
    return outputs


def input_parts(session, name: str) -> dict:
    """What a stage's result depends on; any change reruns it."""
    from agmask.config import config_json, resolve_stage_config
    from agmask.pipeline import manifest

    module = _registry().stage_module(name)
    upstream = {}
    for dep in module.DEPENDS:
        done = read_done(session.run_dir, dep)
        if done is None:
            raise StageError(f"stage {name} needs stage {dep} first: run `agmask {dep}` (or `agmask run`) "
                             f"with --run-dir {session.run_dir}")
        upstream[dep] = done["outputs"]
    parts = {
        "stage": name,
        "agmask": __version__,
        "core": session.cfg.core(),
        "stage_config": config_json(session.stage_config(name)),  # with the recipe's options (agmask.tuning.recipe)
        "concept": sha256_text(session.concept.text),
        "model_sha256": session.model_sha256 or manifest(session.run_dir)["model"]["sha256"],
        "prior_adapters": [str(p) for p in session.prior_adapters],
        "upstream": upstream,
    }
    scores = getattr(module, "SCORES_ANSWERS", False)  # a bool, or a function of the stage's options
    if scores(session.stage_config(name)) if callable(scores) else scores:
        parts["scoring"] = SCORING_VERSION  # its outputs hold answer scores: a new way to score redoes them
    reads = getattr(module, "READS_OPTIONS", ())
    if reads:  # other stages' options it works with (compare: unlearn's), as they will be used: with the recipe,
        # except for the stage the recipe comes from (tune), which reads them as the user set them
        def options(other: str):
            if getattr(module, "WITH_RECIPE", True):
                return session.stage_config(other)
            return resolve_stage_config(_registry().stage_module(other), session.cfg)

        parts["options_of"] = {other: config_json(options(other)) for other in reads}
    if uses(module):
        parts["uses"] = {u: (read_done(session.run_dir, u) or {}).get("outputs") for u in uses(module)}
    return parts


def hash_of(parts: dict) -> str:
    return digest(parts)


def input_hash(session, name: str) -> str:
    return hash_of(input_parts(session, name))


def staging_hash(module, parts: dict) -> str:
    """The hash an interrupted attempt's staging view is kept under: the input hash without the options the
    stage declares in RESUMES_ACROSS (tune.trials: finished trials stay valid when the trial count changes)."""
    across = getattr(module, "RESUMES_ACROSS", ())
    if not across:
        return hash_of(parts)
    config = {k: v for k, v in json.loads(parts["stage_config"]).items() if k not in across}
    return hash_of({**parts, "stage_config": config})


def recorded_inputs(parts: dict) -> dict:
    """The per-input digests a DONE marker keeps, to say later which input changed."""
    out = {k: digest(v) for k, v in parts.items() if k not in ("upstream", "uses")}
    out["upstream"] = {dep: digest(outputs) for dep, outputs in parts["upstream"].items()}
    out["uses"] = {u: None if o is None else digest(o) for u, o in parts.get("uses", {}).items()}
    return out


_WHAT = {"concept": "the concept file changed", "stage_config": "its options changed",
         "core": "the model, seed, dtype or budget changed", "model_sha256": "the model's weights changed",
         "agmask": "agmask's version changed", "prior_adapters": "the earlier concepts' adapters changed",
         "options_of": "the options it reads from other stages changed",
         "scoring": "the way answers are scored changed (agmask.scoring.SCORING_VERSION)"}


def stale_reason(done: dict, parts: dict) -> str:
    """Why a DONE marker does not match the present inputs, in words."""
    old, new = done.get("inputs"), recorded_inputs(parts)
    if not old:
        return "its inputs changed"
    reasons = [text for key, text in _WHAT.items() if old.get(key) != new.get(key)]
    if "stage_config" in done and done["stage_config"] != parts["stage_config"]:
        was, now = json.loads(done["stage_config"]) or {}, json.loads(parts["stage_config"]) or {}
        changes = ", ".join(f"{k} {json.dumps(was.get(k))} -> {json.dumps(now.get(k))}"
                            for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k))
        from agmask.tuning.recipe import RECIPE_STAGES

        recipe = ", or tune/choice.json changed them (--recipe)" if parts["stage"] in RECIPE_STAGES else ""
        reasons[reasons.index(_WHAT["stage_config"])] = (f"its options changed ({changes}; --set options are not "
                                                         f"remembered: give the ones it ran with{recipe})")
    for kind in ("upstream", "uses"):
        reasons += [f"stage {dep}'s results changed" for dep in new[kind] if old.get(kind, {}).get(dep) != new[kind][dep]]
    return "; ".join(reasons) or "its inputs changed"


def verify_outputs(run_dir: Path, name: str, done: dict | None = None) -> None:
    """Every file the stage recorded is there with the recorded sha256; else one line naming it."""
    done = done if done is not None else read_done(run_dir, name)
    if done is None:
        return
    for rel, sha in sorted(done.get("outputs", {}).items()):
        path = Path(run_dir) / rel
        problem = None
        if not path.is_file():
            problem = "is missing"
        elif sha256_file(path) != sha:
            problem = "does not match the hash recorded when it was written (truncated or edited?)"
        if problem:
            raise StageError(f"{rel} {problem}: rerun stage {name} with `agmask {name} --force --run-dir "
                             f"{real_run_dir(run_dir)}`")


def real_run_dir(run_dir: Path) -> Path:
    """The run directory a user passes: a staging view's owner (`<run>/.staging/<stage>` -> `<run>`)."""
    run_dir = Path(run_dir)
    return run_dir.parent.parent if run_dir.parent.name == ".staging" else run_dir


def check_upstream(session, name: str) -> None:
    """Every upstream stage (transitively) is done and current for the present inputs, and the files this
    stage reads are intact; otherwise one line naming the stage to rerun."""
    registry = _registry()
    for dep in registry.ancestors(name):
        done = read_done(session.run_dir, dep)
        if done is None:
            raise StageError(f"stage {name} needs stage {dep} first: run `agmask {dep}` (or `agmask run`) "
                             f"with --run-dir {real_run_dir(session.run_dir)}")
        parts = input_parts(session, dep)
        if done.get("input_hash") != hash_of(parts):
            raise StageError(f"stage {name} needs stage {dep} to be current, but {stale_reason(done, parts)} since "
                             f"it ran: rerun it with `agmask {dep} --run-dir {real_run_dir(session.run_dir)}` "
                             "(or `agmask run`, which reruns what is needed)")
    module = registry.stage_module(name)
    for dep in (*module.DEPENDS, *uses(module)):
        verify_outputs(session.run_dir, dep)


def current_stages(run_dir: Path) -> dict[str, str | None]:
    """{stage: None to show its results, else why they are not current} for every stage with a folder, from
    the run directory alone (no config). A stage with a DONE marker is current when its files are intact and
    every upstream it recorded is current and unchanged; one with a STALE marker (an upstream stage reran
    since) is not; one with neither (a run directory written by hand) is shown as it is."""
    registry = _registry()
    status: dict[str, str | None] = {}
    for name in registry.all_stages():
        done = read_done(run_dir, name)
        stale = stage_dir(run_dir, name) / STALE
        if done is None:
            if stale.is_file():
                status[name] = f"{_stale_text(stale)}: rerun `agmask {name} --run-dir {real_run_dir(run_dir)}` (or `agmask run`)"
            elif stage_dir(run_dir, name).is_dir():
                status[name] = None
            continue
        try:
            verify_outputs(run_dir, name, done)
        except StageError as e:
            status[name] = str(e)
            continue
        module = registry.stage_module(name)
        recorded = done.get("inputs") or {}
        why = None
        for dep in (*module.DEPENDS, *uses(module)):
            dep_done = read_done(run_dir, dep)
            kind = "upstream" if dep in module.DEPENDS else "uses"
            now = None if dep_done is None else digest(dep_done["outputs"])
            if status.get(dep) is not None:
                why = f"stage {dep} is not current"
            elif recorded and dep_done is not None and recorded.get(kind, {}).get(dep) != now:
                why = f"stage {dep} changed since it ran"
            if why:
                break
        status[name] = why and f"{why}: rerun `agmask {name} --run-dir {real_run_dir(run_dir)}` (or `agmask run`)"
    return status


def _stale_text(path: Path) -> str:
    try:
        return read_json(path)["reason"]
    except (OSError, ValueError, KeyError, TypeError):
        return "an upstream stage reran since it ran"


def invalidate_dependants(run_dir: Path, name: str) -> list[str]:
    """Replace the DONE markers of stages built on an earlier version of `name`'s outputs (transitively) by
    STALE markers that say why; their files stay, the report leaves them out until they run again."""
    registry = _registry()
    changed, removed = {name}, []
    for other in registry.all_stages():
        module = registry.stage_module(other)
        inputs = [d for d in (*module.DEPENDS, *uses(module)) if d in changed]
        done = read_done(run_dir, other)
        if not inputs or done is None:
            continue
        recorded = done.get("inputs") or {}
        for dep in inputs:
            dep_done = read_done(run_dir, dep)
            now = None if dep_done is None else digest(dep_done["outputs"])
            kind = "upstream" if dep in module.DEPENDS else "uses"
            if not recorded or recorded.get(kind, {}).get(dep) != now:
                write_json(stage_dir(run_dir, other) / STALE, {
                    "reason": f"stage {dep} reran since it ran", "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
                (stage_dir(run_dir, other) / DONE).unlink()
                changed.add(other)
                removed.append(other)
                break
    return removed
