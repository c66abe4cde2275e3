"""The recipe options `agmask tune` searches, declared once: their ranges, when each is searched, and the known
starting points every search tries first.

The ranges come from the tuning history in the README (training halves, default model): the contrastive
lambda 0.5 beat 1; first-token hinges of 2-8 nats with retain weights 3-12; every lead on both terms.
An option the user sets with `--set` is held at that value, not searched; `localisation` options (each new
value costs an attribution on half A, or a causal selection) are searched only with `tune.search_localisation`;
the recommendation weights only when the concept has `recommend_train`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agmask.stages.mask import DEFAULT_K
from agmask.tuning.recipe import RECIPE_STAGES as STAGES  # the stages whose options a recipe sets


@dataclass(frozen=True)
class Option:
    stage: str
    name: str
    choices: tuple = ()  # categorical values; else a float range:
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    localisation: bool = False
    needs_recommend: bool = False
    when: tuple[str, Any] | None = None  # searched only when that option (declared earlier) has that value
    otherwise: Any = None  # the value when `when` does not hold

    @property
    def key(self) -> str:
        return f"{self.stage}.{self.name}"

    def contains(self, value) -> bool:
        """Whether `value` is a point of this option's range (a starting point must be)."""
        if self.choices:
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return False
        return self.step is None or abs((value - self.low) / self.step - round((value - self.low) / self.step)) < 1e-9

    def suggest(self, trial):
        if self.choices:
            return trial.suggest_categorical(self.key, list(self.choices))
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


SPACE: tuple[Option, ...] = (
    Option("attribute", "retain_weight", low=0.25, high=1.0, step=0.25),
    Option("attribute", "positions", ("answer", "all", "prompt"), localisation=True),
    Option("mask", "selection", ("score", "causal"), localisation=True),
    Option("mask", "k", (128, 256, 512)),
    Option("mask", "num_layers", (0, 2, 4, 6)),
    Option("unlearn", "lr", low=5e-4, high=4e-3, log=True),
    Option("unlearn", "first_token_weight", (0.0, 1.0)),
    Option("unlearn", "first_token_margin", low=2.0, high=10.0, step=1.0, when=("unlearn.first_token_weight", 1.0),
           otherwise=0.0),
    Option("unlearn", "retain_weight", low=1.0, high=12.0, step=1.0),
    Option("unlearn", "forget_all_leads", (False, True)),
    Option("unlearn", "retain_all_leads", (False, True)),
    Option("unlearn", "retain_without_concept_start", (False, True)),
    Option("unlearn", "keep_rest_weight", (0.0, 2.0, 8.0)),
    Option("unlearn", "recommend_weight", (0.0, 0.5, 1.0), needs_recommend=True),
    Option("unlearn", "preference_weight", (0.0, 1.0, 4.0), needs_recommend=True),
)

# Tried first, in this order (each only where it is a point of the searched ranges): the stages' own defaults,
# plain NPO (the defaults before the first full tune) and the defaults before the rule's revision (no keep-the-rest
# term: the first full tune's choice); neither of the last two had the preference term.
START_POINTS: tuple[tuple[str, dict], ...] = (
    ("defaults", {}),
    ("plain NPO", {"attribute.retain_weight": 1.0, "unlearn.first_token_weight": 0.0,
                   "unlearn.retain_weight": 1.0, "unlearn.forget_all_leads": False, "unlearn.keep_rest_weight": 0.0,
                   "unlearn.retain_without_concept_start": False, "unlearn.retain_all_leads": False,
                   "unlearn.preference_weight": 0.0}),
    ("without keep the rest", {"unlearn.keep_rest_weight": 0.0, "unlearn.preference_weight": 0.0}),
)


BASELINE_START = "plain NPO"  # a baseline more than a candidate: it forgets on no concept measured


def start_point_recipes(baseline: bool = True) -> tuple[tuple[str, dict], ...]:
    """START_POINTS, without plain NPO unless `baseline`."""
    return tuple(p for p in START_POINTS if baseline or p[0] != BASELINE_START)


def base_value(option: Option, base: dict):
    """The option's value in the stages' resolved configs `base` ({stage: Config}); mask.k unset is DEFAULT_K."""
    value = getattr(base[option.stage], option.name)
    return DEFAULT_K if option.key == "mask.k" and value is None else value


@dataclass(frozen=True)
class Search:
    """Which options a search samples and the values of the others, for one run."""

    searched: tuple[Option, ...]
    fixed: dict[str, Any]  # key -> value: set by the user, or not searched here

    @classmethod
    def plan(cls, base: dict, user_set: dict[str, dict], localisation: bool, has_recommend: bool) -> "Search":
        """base: {stage: Config} without a recipe; user_set: the --set overrides ({stage: {option: value}})."""
        searched, fixed = [], {}
        for option in SPACE:
            held = option.name in user_set.get(option.stage, {}) or (option.localisation and not localisation) \
                or (option.needs_recommend and not has_recommend)
            if held:
                fixed[option.key] = base_value(option, base)
            else:
                searched.append(option)
        return cls(tuple(searched), fixed)

    def sample(self, trial) -> dict[str, Any]:
        """Every option's value for this trial ({key: value}): sampled (define-by-run) or fixed."""
        values = dict(self.fixed)
        for option in self.searched:
            if option.when and values.get(option.when[0]) != option.when[1]:
                values[option.key] = option.otherwise
            else:
                values[option.key] = option.suggest(trial)
        return values

    def start_points(self, base: dict, baseline: bool = True) -> list[tuple[str, dict]]:
        """The starting points as Optuna params: the searched options' values, skipping a value outside its range
        (the sampler draws that one) and a point that adds nothing to an earlier one; without `baseline`, plain
        NPO is left out."""
        points, seen = [], []
        for label, overrides in start_point_recipes(baseline):
            values = dict(self.fixed)
            params = {}
            for option in self.searched:
                if option.when and values.get(option.when[0]) != option.when[1]:
                    values[option.key] = option.otherwise
                    continue
                value = overrides.get(option.key, base_value(option, base))
                values[option.key] = value
                if option.contains(value):
                    params[option.key] = value
            if params not in seen:
                seen.append(params)
                points.append((label, params))
        return points


def by_stage(values: dict[str, Any]) -> dict[str, dict]:
    """{"unlearn.lr": 1e-3, ...} -> {"unlearn": {"lr": 1e-3}, ...}"""
    out: dict[str, dict] = {stage: {} for stage in STAGES}
    for key, value in values.items():
        stage, _, name = key.partition(".")
        out[stage][name] = value
    return out
