"""Optional stage tune: choose the recipe (attribute, mask and unlearn options) on the training halves only.

Attribution, mask and training on half A of forget_train / retain_train (/ recommend_train), forgetting and
locality on half B, never an evaluation set (the concept is read through `training_view`). An Optuna
search (`agmask.tuning.search`) runs `tune.trials` trials; the rule in `agmask.tuning.rule` (and
docs/TUNING.md) picks one. Writes `tune/trials.jsonl` (every trial: options, half-B measurements,
constraints, seconds), `tune/choice.json` (the chosen options per stage, the rule, the trial),
`tune/trials.png`, and the study itself, `tune/optuna.db` (a rerun resumes it). Under `--recipe auto` (the
default) the attribute, mask and unlearn stages apply the choice under the user's `--set` options.
"""
from __future__ import annotations

from dataclasses import field
from pathlib import Path

from agmask.config import PositiveInt, stage_options
from agmask.errors import StageError
from agmask.files import write_json, write_jsonl

NAME = "tune"
DIR = "tune"
DEPENDS: tuple[str, ...] = ()
SCORES_ANSWERS = True  # its outputs hold answer scores (agmask.scoring.SCORING_VERSION is in its input hash)
READS_OPTIONS = ("attribute", "mask", "unlearn")  # their options are part of its input hash
WITH_RECIPE = False  # ... as the user set them: the recipe is what tune itself writes
RESUMABLE = True  # an interrupted search continues from tune/optuna.db
RESUMES_ACROSS = ("trials",)  # ... also under another trial count: lower it to settle a search early


@stage_options
class Config:
    trials: PositiveInt = field(default=24, metadata={
        "help": "trials the search runs in all (finished ones in tune/optuna.db count, an interrupted search's too: raise "
                "it to continue a search, or lower it to settle one with the trials it has)"})
    startup_trials: PositiveInt = field(default=8, metadata={
        "help": "trials drawn at random (the starting points included) before TPE models the results"})
    start_points: bool = field(default=True, metadata={
        "help": "try the starting points first: the stages' defaults, plain NPO, the defaults without keep-the-rest"})
    baseline_start: bool = field(default=True, metadata={
        "help": "with start_points, also try plain NPO (a baseline that shows what the other terms add; the demo budget "
                "leaves it out)"})
    search_localisation: bool = field(default=True, metadata={
        "help": "also search attribute.positions and mask.selection (each new value costs an attribution on half A "
                "or a causal selection)"})


# demo: 3 trials (the defaults, the defaults without keep-the-rest, one sampled recipe; plain NPO, a baseline that
# never wins, only at full budget) of 40 steps after the base scoring and the attribution on half A: under 20
# minutes on 2 cores (docs/TUNING.md, Budgets).
PRESETS = {"demo": {"trials": 3, "baseline_start": False, "search_localisation": False}, "full": {}}


def run(cfg, run_dir: Path, session) -> None:
    from agmask.tuning.figures import trials_figure
    from agmask.tuning.recipe import options_text, verdict
    from agmask.tuning.rule import CONSTRAINTS, RULE, choose, missed
    from agmask.tuning.search import describe_space, search

    conf: Config = session.stage_config(NAME)
    out = Path(run_dir) / DIR
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.force:  # --force: a new search
        _continue_finished_search(Path(run_dir), out)
    rows, setup = search(session, conf, out, session.reporter.log)
    write_jsonl(out / "trials.jsonl", rows)
    chosen = choose(rows)
    if chosen is None:
        raise StageError(f"tune: none of the {len(rows)} trials completed (see their errors in "
                         f"{out / 'trials.jsonl'}); fix the options they name and rerun `agmask tune`")
    write_json(out / "choice.json", {
        "options": chosen["options"], "trial": chosen, "rule": RULE,
        "constraints": {c.name: c.text for c in CONSTRAINTS}, "meets_every_constraint": chosen["feasible"],
        "missed_constraints": missed(chosen),
        "trials": len(rows), "study": setup.study_name, "space": describe_space(setup.plan), "budget": cfg.budget,
        "halves": setup.halves_note,
    })
    trials_figure(out / "trials.png", rows, chosen,
                  f"tune on {session.spec.name}: {len(rows)} trials (half B of the training sets)")
    how = verdict(chosen["feasible"], missed(chosen)) + ("" if chosen["feasible"] else
          " on half B; more trials may find one that does: --budget full, or --set tune.trials=N above this search's")
    session.reporter.log(f"tune: chose trial {chosen['trial']} ({chosen['start']}; {how}): "
                         + options_text(chosen["options"]))


def _continue_finished_search(run_dir: Path, out: Path) -> None:
    """A fresh staging folder starts from the last finished search's study (and base scores), so raising
    tune.trials continues it; a search with other settings makes its own study in the same file."""
    import shutil

    from agmask.currency import real_run_dir
    from agmask.tuning.search import BASE_FILE, STUDY_DB

    finished = real_run_dir(run_dir) / DIR
    for name in (STUDY_DB, BASE_FILE):
        if (finished / name).is_file() and not (out / name).exists():
            shutil.copy2(finished / name, out / name)
