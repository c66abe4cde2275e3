"""The search: an Optuna study in the run directory (`tune/optuna.db`, SQLite), seeded, resumable, run to the budget.

Trials are asked and told one at a time. Each trial's sampler is a TPE sampler seeded from the run's seed and
the number of trials finished so far, constrained by the rule's constraints (`agmask.tuning.rule`): the trials
of a search that was interrupted and resumed are the ones an uninterrupted search runs. A new study first tries
the known starting points (`agmask.tuning.space.START_POINTS`). A trial that was running when the process died
is marked failed and its options are tried again; a trial that fails with a one-line error (e.g. a mask that
selects nothing) is recorded with it and counts towards the budget. The study is named by everything that
makes its trials comparable (concept, model, seed, the stages' base options, what is searched, the rule), so a
finished search continues when only `tune.trials` grows, and starts afresh otherwise.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from agmask.concepts.training_view import training_view
from agmask.config import config_json, resolve_stage_config
from agmask.currency import digest
from agmask.errors import AgmaskError
from agmask.files import read_json, sha256_text, write_json
from agmask.masking import layers_of
from agmask.tuning.fit import HalfAFit
from agmask.tuning.measure import Halves, compare, measure, neighbour_type, unseen_in_a
from agmask.tuning.rule import RULE_VERSION, assess, objective_value, optuna_constraints
from agmask.tuning.space import SPACE, STAGES, Search, by_stage, start_point_recipes

STUDY_DB = "optuna.db"
BASE_FILE = "base.json"  # the base model's half-B rows, measured once per study


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna logs every trial at INFO; the stage reports its own progress. The level is restored on exit."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def _sampler(seed: int, finished: int, startup: int):
    """TPE, seeded by the run's seed and the trials finished so far; it reads each trial's constraints."""
    import optuna

    return optuna.samplers.TPESampler(seed=(seed * 100_003 + finished) % 2**32, n_startup_trials=startup)


def _finished(study) -> list:
    """Trials that count towards the budget: completed, or failed with a recorded error (not interrupted)."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "row" in t.user_attrs)]


def _retry_interrupted(study, storage, log) -> None:
    """A trial left running by a dead process: failed, and its options queued to run again."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"start": t.user_attrs.get("start", "sampled"), "retry_of": t.number},
                            skip_if_exists=False)
        log(f"tune: trial {t.number} was interrupted; its options run again")


@dataclasses.dataclass
class Setup:
    """What every trial of one search shares."""

    session: object
    spec: object  # training view
    halves: Halves
    base_confs: dict  # {stage: Config} without a recipe
    plan: Search
    study_name: str
    halves_note: dict  # what half B's neighbour locality measures (see measure.retain_halves)


def setup(session, conf) -> Setup:
    """The training view, its halves, the stages' options without a recipe, and what is searched."""
    from agmask.pipeline import stage_module

    spec = training_view(session.spec)  # an evaluation set touched from here on is an error
    halves = Halves.of(spec)
    if len(halves.forget_b) < 1 or len(halves.retain_b) < 1:
        raise AgmaskError(f"concept {spec.name!r}: tune needs at least 2 forget_train and 2 retain_train prompts "
                          "(half A fits, half B judges)")
    base_confs = {s: resolve_stage_config(stage_module(s), session.cfg) for s in STAGES}
    plan = Search.plan(base_confs, session.cfg.overrides, conf.search_localisation,
                       bool(halves.recommend_a and halves.recommend_b))
    context = {"concept": sha256_text(session.concept.text), "model": session.model_sha256, "seed": session.cfg.seed,
               "prior_adapters": [str(p) for p in session.prior_adapters],
               "base": {s: config_json(c) for s, c in base_confs.items()},
               "searched": [repr(o) for o in plan.searched], "fixed": plan.fixed,
               "start_points": list(start_point_recipes(conf.baseline_start)) if conf.start_points else [], "startup": conf.startup_trials,
               "retain_halves": "by answer",  # a study of the every-other split judged other prompts
               "measures": "other titles",  # ... and its base rows lack the other titles' log-probs
               "rule": RULE_VERSION}  # the sampler's objective follows the rule
    note = {"retain_a": len(halves.retain_a), "retain_b": len(halves.retain_b),
            "neighbour_b": sum(neighbour_type(spec, it) for it in halves.retain_b),
            "neighbour_b_unseen_in_a": unseen_in_a(halves, halves.fit_spec(spec))}
    return Setup(session, spec, halves, base_confs, plan, f"tune-{digest(context)[:16]}", note)


def base_rows(s: Setup, out: Path, log) -> dict:
    """The base model's half-B rows: read from `tune/base.json` when this study measured them already."""
    path = out / BASE_FILE
    if path.is_file():
        saved = read_json(path)
        if saved.get("study") == s.study_name:
            return saved["rows"]
    session = s.session
    model, tokenizer, _ = session.model()
    started = time.perf_counter()
    base = session.with_prior_adapters(model)
    try:
        rows = measure(base, tokenizer, s.spec, s.halves)
    finally:
        if session.prior_adapters:
            session.drop_adapters(base)
    write_json(path, {"study": s.study_name, "rows": rows})
    log(f"tune: base model measured on half B in {time.perf_counter() - started:.0f} s")
    return rows


def run_trial(s: Setup, fit: HalfAFit, values: dict, base: dict) -> dict:
    """Fit one trial's options on half A and measure them on half B; the trial's row without its bookkeeping."""
    opts = by_stage(values)
    confs = {stage: dataclasses.replace(s.base_confs[stage], **opts[stage]) for stage in STAGES}
    selection = fit.mask(confs["attribute"], confs["mask"])
    _, tokenizer, _ = s.session.model()
    timed: dict[str, float] = {}

    def measure_timed(model) -> dict:
        started = time.perf_counter()
        rows = measure(model, tokenizer, s.spec, s.halves)
        timed["measure"] = round(time.perf_counter() - started, 3)
        return rows

    steps, after = fit.train(selection, confs["unlearn"], measure_timed)
    measurements = compare(base, after, s.spec)
    return {"options": opts, "mask": {"layers": layers_of(selection.mask), "k": selection.header["k"],
                                      "neurons": int(selection.mask.sum()), "per_layer": selection.mask.sum(1).tolist()},
            "steps": len(steps), "measurements": measurements, **assess(measurements),
            "time": {"train": steps[-1]["seconds"] if steps else 0.0, "measure": timed.get("measure", 0.0)}}


def _summary(row: dict) -> str:
    m = row["measurements"]
    fmt = lambda v, spec=".2f": "-" if v is None else format(v, spec)
    status = "meets every constraint" if row["feasible"] else f"violation {row['violation']:.2f}"
    return (f"worst-lead rank {fmt(m['worst_lead_rank'], '.0f')}, neighbour |d| {fmt(m['neighbour_abs'])}, "
            f"other titles |d| {fmt(m.get('other_titles_abs'))}, "
            f"general |d| {fmt(m['general_abs'])}, MC top-1 {fmt(m['mc_top1'])}; {status}")


def search(session, conf, out: Path, log=lambda line: None) -> tuple[list[dict], Setup]:
    """Run the study in `out` to `conf.trials` finished trials; returns every finished trial's row, in order, and
    the search's setup."""
    import optuna
    from optuna.trial import TrialState

    s = setup(session, conf)
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(out).resolve() / STUDY_DB}")
    try:
        with _quiet_optuna():
            study = optuna.create_study(storage=storage, study_name=s.study_name, direction="minimize",
                                        load_if_exists=True, sampler=_sampler(session.cfg.seed, 0, conf.startup_trials))
            if not study.get_trials(deepcopy=False) and conf.start_points:
                for label, params in s.plan.start_points(s.base_confs, conf.baseline_start):
                    study.enqueue_trial(params, user_attrs={"start": label})
            _retry_interrupted(study, storage, log)
            kept = len(_finished(study))
            if kept:
                log(f"tune: resuming study {s.study_name}: {kept} trial(s) already finished")
            log(f"tune: half B: {s.halves_note['neighbour_b']} neighbour-type retain prompts, "
                f"{s.halves_note['neighbour_b_unseen_in_a']} of them about a title no half-A prompt trains on")
            base = base_rows(s, out, log)
            fit = HalfAFit(session, s.halves.fit_spec(s.spec), session.reporter)
            while (done := len(_finished(study))) < conf.trials:
                study.sampler = _sampler(session.cfg.seed, done, conf.startup_trials)
                trial = study.ask()
                values = s.plan.sample(trial)
                label = trial.user_attrs.get("start", "sampled")
                started = time.perf_counter()
                try:
                    row = run_trial(s, fit, values, base)
                except AgmaskError as e:  # these options cannot run here (e.g. a mask that selects nothing)
                    row = {"options": by_stage(values), "error": str(e)}
                row = {"trial": trial.number, "start": label, "state": "failed" if "error" in row else "complete",
                       **row, "seconds": round(time.perf_counter() - started, 1)}
                trial.set_user_attr("row", row)
                if row["state"] == "failed":
                    study.tell(trial, state=TrialState.FAIL)
                    log(f"tune: trial {trial.number} ({done + 1} of {conf.trials}, {label}) failed: {row['error']}")
                    continue
                for name, value in optuna_constraints(row).items():  # <= 0 when met: constrained TPE
                    trial.set_constraint(name, value)
                study.tell(trial, objective_value(row))
                left = (conf.trials - done - 1) * row["seconds"] / 60
                log(f"tune: trial {trial.number} ({done + 1} of {conf.trials}, {label}) in {row['seconds']:.0f} s "
                    f"(training {row['time']['train']:.0f}, half B {row['time']['measure']:.0f}): "
                    f"{_summary(row)}" + (f"; about {left:.0f} min left" if left >= 1 else ""))
            return [t.user_attrs["row"] for t in sorted(_finished(study), key=lambda t: t.number)], s
    finally:
        storage.remove_session()
        storage.engine.dispose()


def describe_space(plan: Search) -> dict:
    """What a search sampled and what it held fixed (for tune/choice.json)."""
    return {"searched": [o.key for o in plan.searched], "fixed": plan.fixed,
            "declared": [o.key for o in SPACE]}
