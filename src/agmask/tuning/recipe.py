"""Which options train the adapter: the stages' own defaults, or `agmask tune`'s choice (`--recipe auto|defaults`).

Under `--recipe auto` (the default) the attribute, mask and unlearn stages apply `tune/choice.json`'s options
when the choice is current, as overrides under the user's own `--set` options (a `--set` option wins). The
applied options are part of those stages' resolved options, so of their input hashes: choosing another recipe
reruns what depends on it. `--recipe defaults` ignores the choice.

A choice is current when the tune stage's DONE marker is there, its files are intact (a damaged one is an
error naming it, as for every stage), and it was made for this concept file, these model weights, this agmask
version and these earlier adapters. The budget, the seed and tune's own options may differ: a choice is a
recipe for any budget. A choice that is not current is not applied: the run says why (once) and trains with
the defaults, and the unlearn summary records it.

Kept light (no Optuna, no torch): every stage's options pass through here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from agmask.errors import AgmaskError

RECIPE_STAGES = ("attribute", "mask", "unlearn")  # the stages whose options a recipe sets
CHOICE = "choice.json"
_CURRENT = {"concept": "the concept file changed", "model_sha256": "the model's weights changed",
            "agmask": "agmask's version changed", "prior_adapters": "the earlier concepts' adapters changed"}


@dataclass(frozen=True)
class Recipe:
    name: str  # "defaults" or "tune"
    options: dict[str, dict] = field(default_factory=dict)  # {stage: {option: value}}, applied under --set
    trial: int | None = None  # the chosen trial of tune/trials.jsonl
    note: str | None = None  # why a choice that exists is not applied

    def for_stage(self, stage: str) -> dict:
        return dict(self.options.get(stage, {}))

    def record(self) -> dict:
        """What unlearn/summary.json keeps under `recipe` (and the manifest, without the options)."""
        out = {"name": self.name, "trial": self.trial}
        if self.name == "tune":
            out.update(source=f"tune/{CHOICE}", options=self.options)
        if self.note:
            out["note"] = self.note
        return out


def recipe_for(session) -> Recipe:
    """The recipe the session's attribute, mask and unlearn stages use (see the module docstring)."""
    from agmask.config import resolve_stage_config
    from agmask.currency import input_parts, read_done, real_run_dir, recorded_inputs, stage_dir, verify_outputs
    from agmask.files import read_json
    from agmask.pipeline import all_stages, stage_module

    if "tune" not in all_stages():
        return Recipe("defaults")
    real = real_run_dir(session.run_dir)
    done = read_done(real, "tune")
    if done is None:
        return Recipe("defaults")
    if session.cfg.recipe == "defaults":
        return Recipe("defaults", note=f"--recipe defaults: tune/{CHOICE} is not applied")
    verify_outputs(real, "tune", done)  # a damaged choice is an error naming the file, never read
    now, was = recorded_inputs(input_parts(session, "tune")), done.get("inputs") or {}
    changed = [text for key, text in _CURRENT.items() if was.get(key) != now.get(key)]
    if changed:
        return Recipe("defaults", note=(
            f"tune/{CHOICE} is not applied, it is not current ({'; '.join(changed)} since `agmask tune` ran): "
            f"training with the defaults; rerun `agmask tune --run-dir {real}` to choose again, or pass "
            "--recipe defaults"))
    path = stage_dir(real, "tune") / CHOICE
    choice = read_json(path)
    options = {stage: dict(choice.get("options", {}).get(stage, {})) for stage in RECIPE_STAGES}
    for stage in RECIPE_STAGES:
        try:
            resolve_stage_config(stage_module(stage), session.cfg, options[stage])
        except AgmaskError as e:
            raise AgmaskError(f"{path}: {e}; rerun `agmask tune --force --run-dir {real}`, or pass --recipe "
                              "defaults") from None
    return Recipe("tune", options, trial=choice["trial"]["trial"])


def recipe_key(session) -> tuple:
    """What the session's recipe depends on besides the files tune's DONE marker vouches for."""
    from agmask.currency import real_run_dir
    from agmask.pipeline import all_stages
    from agmask.rundir import RunDir

    done = None
    if "tune" in all_stages():
        path = RunDir(real_run_dir(session.run_dir)).done("tune")
        done = path.read_bytes() if path.is_file() else None
    return (session.cfg.recipe, done, session.model_sha256, session.concept.text,
            tuple(map(str, session.prior_adapters)))


def options_text(options: dict[str, dict]) -> str:
    """`attribute.retain_weight=0.5, unlearn.lr=0.00077, ...` (floats to 3 significant digits)."""
    show = lambda v: format(v, ".3g") if isinstance(v, float) else str(v)
    return ", ".join(f"{stage}.{k}={show(v)}" for stage, opts in options.items() for k, v in opts.items())


def verdict(meets_every_constraint: bool, missed: list[str]) -> str:
    """How the chosen trial stands against the constraints, naming those it misses (log line and summary)."""
    if meets_every_constraint:
        return "meets every constraint"
    return "no trial met every constraint: the least violating" + (f", missing {', '.join(missed)}" if missed else "")


def choice_line(choice: dict) -> str:
    """One line on tune/choice.json for the CLI summary."""
    trial, m = choice["trial"], choice["trial"]["measurements"]
    fmt = lambda v, spec=".2f": "-" if v is None else format(v, spec)
    how = verdict(choice["meets_every_constraint"], choice.get("missed_constraints", []))
    options = options_text(choice["options"])
    return (f"tune: trial {trial['trial']} of {choice['trials']} ({trial['start']}; {how}) on half B: worst-lead "
            f"median first-token rank {fmt(m['worst_lead_rank'], '.0f')}, neighbour-type |change| "
            f"{fmt(m['neighbour_abs'])}, general {fmt(m['general_abs'])}; {options}")
