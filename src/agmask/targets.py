"""The project's targets, declared once: what an adapter must reach on the held-out sets.

Each target reads one value from the `metrics` dict of `eval/metrics.json` (a dotted path: the metric's
name, then keys), optionally the base model's value, and compares the value with a bound:

    value OP bound     OP in <=, <, >=, >; bound = threshold, base + threshold ("+") or base x threshold ("*")
    |value - base| <= bound                  (op "within": within the bound of the base's value)

The threshold is a number or a dotted path to one (e.g. the chance share). A target whose metric was not
run, was skipped, or lacks the value (or the base value a relative bound needs) is "not measured", never
met. The report's verdict card and the CLI summary both read `evaluate_targets`.

Sources: issue 16 (forgetting, locality, utility, fluency), issue 17 (recommendations), issue 15 (relearning).
"""
from __future__ import annotations

from dataclasses import dataclass

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"
OPS = ("<=", "<", ">=", ">", "within")


@dataclass(frozen=True)
class Target:
    name: str
    issue: int
    description: str
    value: str  # dotted path in the metrics dict: the unlearned model's value
    op: str
    threshold: float | str  # a number, or a dotted path to one
    base: str | None = None  # dotted path: the base model's value (shown; relative bounds use it)
    of_base: str = ""  # "": bound = threshold; "+": base + threshold; "*": base x threshold
    needs: str = ""  # what to run to measure it, when the defaults may not

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"target {self.name}: op {self.op!r} is not one of {', '.join(OPS)}")
        if self.of_base not in ("", "+", "*") or (self.op == "within" and self.of_base == "+"):
            raise ValueError(f"target {self.name}: of_base must be '', '+' or '*' ('+' not with within)")
        if self.relative and (self.base is None or isinstance(self.threshold, str)):
            raise ValueError(f"target {self.name}: a bound relative to the base needs a base path and a number")

    @property
    def relative(self) -> bool:
        return bool(self.of_base) or self.op == "within"

    @property
    def rule(self) -> str:
        """The threshold in words, e.g. `<= base + 0.05`, `within 10% of base`, `<= chance_share`."""
        t = self.threshold
        if isinstance(t, str):
            return f"{self.op} {t.rsplit('.', 1)[-1]}"
        if self.op == "within":
            return f"within {t * 100:g}% of base" if self.of_base == "*" else f"within {t:g} of base"
        if self.of_base == "+":
            return f"{self.op} base {'-' if t < 0 else '+'} {abs(t):g}"
        return f"{self.op} {t:g} x base" if self.of_base == "*" else f"{self.op} {t:g}"


TARGETS: tuple[Target, ...] = (
    # issue 16: forgetting on the base-known prompts of forget_eval + probes, and over all of forget_eval
    Target("forget.mc_top1", 16, "base-known prompts: the concept is never the top multiple-choice candidate",
           "forget_base_known.adapted.mc_top1_rate", "<=", 0, base="forget_base_known.base.mc_top1_rate"),
    Target("forget.mc_share", 16, "base-known prompts: the concept's multiple-choice share at or below chance",
           "forget_base_known.adapted.mc_share", "<=", "forget_base_known.chance_share",
           base="forget_base_known.base.mc_share"),
    Target("forget.first_token_rank", 16, "base-known prompts: median rank of the answer's first token above 100",
           "forget_base_known.adapted.median_first_token_rank", ">", 100,
           base="forget_base_known.base.median_first_token_rank"),
    Target("forget.answer_logprob", 16, "forget_eval: mean answer log-prob down by at least 5 nats",
           "forget_efficacy.adapted.mean_answer_logprob", "<=", -5.0, base="forget_efficacy.base.mean_answer_logprob",
           of_base="+"),
    # issue 16: locality, utility, fluency
    Target("locality.anchored", 16, "anchored neighbours: mean |change in answer log-prob| at most 0.5 nats",
           "locality.anchored.mean_abs_delta_answer_logprob", "<=", 0.5),
    Target("locality.unseen", 16, "unseen neighbours: mean |change in answer log-prob| at most 0.5 nats",
           "locality.unseen.mean_abs_delta_answer_logprob", "<=", 0.5),
    Target("locality.mc_top1", 16, "neighbours the base did not answer with the concept: MC top-1 count within 1 "
           "of the base's", "locality.mc_top1_count_base_not_concept.adapted", "within", 1,
           base="locality.mc_top1_count_base_not_concept.base"),
    Target("utility.retain_kl", 16, "retain_eval: KL(base || unlearned) per token on the base's reply at most 0.05",
           "kl_greedy.sets.retain_eval.mean_kl_per_token", "<=", 0.05, needs="retain_eval in evaluate.kl_sets"),
    Target("fluency.repetition", 16, "repetition rate of the replies at most the base's + 0.05",
           "fluency.overall.adapted.repetition_rate", "<=", 0.05, base="fluency.overall.base.repetition_rate",
           of_base="+"),
    # issue 17: recommendations (recommend_eval)
    Target("recommend.rate", 17, "sampled recommendations never name the concept",
           "recommendation_rate.adapted.rate", "<=", 0, base="recommendation_rate.base.rate",
           needs="recommend_eval prompts in the concept"),
    Target("recommend.share", 17, "the concept's share of the candidate distribution at or below chance",
           "recommendation_preference.adapted.concept_share", "<=", "recommendation_preference.chance_share",
           base="recommendation_preference.base.concept_share", needs="recommend_eval prompts in the concept"),
    Target("recommend.kl_remaining", 17, "KL over the other candidates (concept removed, renormalised) at most 0.05",
           "recommendation_preference.kl_remaining_mean", "<=", 0.05, needs="recommend_eval prompts in the concept"),
    Target("recommend.top_kept", 17, "the top remaining title unchanged on at least 90% of prompts",
           "recommendation_preference.top_remaining_unchanged", ">=", 0.9, needs="recommend_eval prompts in the concept"),
    Target("recommend.distinct", 17, "distinct top titles within 10% of the base's (no collapse onto one substitute)",
           "recommendation_preference.adapted.distinct_top_remaining", "within", 0.1, of_base="*",
           base="recommendation_preference.base.distinct_top_remaining", needs="recommend_eval prompts in the concept"),
    # issue 15: unconstrained relearning
    Target("attack.relearn_20", 15, "unconstrained relearning, 20 steps: base-known MC top-1 count back to at most "
           "20% of the base's", "attack_relearn_full.variants.relearn k=20.base_known.attacked.mc_top1_count", "<=",
           0.2, of_base="*", base="attack_relearn_full.variants.relearn k=20.base_known.base.mc_top1_count",
           needs="20 in evaluate.full_relearn_steps"),
)


@dataclass(frozen=True)
class TargetResult:
    target: Target
    status: str  # MET, NOT_MET or NOT_MEASURED
    value: float | None = None
    base: float | None = None
    bound: float | None = None
    why: str = ""  # why it is not measured

    @property
    def met(self) -> bool:
        return self.status == MET


def lookup(metrics: dict, path: str) -> tuple[object, str]:
    """(value at dotted `path`, "" ) or (None, why it is not there)."""
    name, *keys = path.split(".")
    value = metrics.get(name)
    if value is None:
        return None, f"metric {name} was not run"
    if isinstance(value, dict) and value.get("skipped"):
        return None, f"{name} skipped: {value['skipped']}"
    for depth, key in enumerate(keys):
        where = ".".join([name, *keys[:depth]])
        if isinstance(value, dict) and value.get("n") == 0:  # e.g. no base-known prompt, no anchored neighbour
            return None, f"{where} has no prompt (n = 0)"
        if not isinstance(value, dict) or value.get(key) is None:
            return None, f"{where} has no {key}"
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"{path} is not a number"
    return float(value), ""


def evaluate_target(target: Target, metrics: dict) -> TargetResult:
    value, why = lookup(metrics, target.value)
    base, base_why = lookup(metrics, target.base) if target.base else (None, "")
    if value is None:
        return TargetResult(target, NOT_MEASURED, base=base, why=why + (f" (needs {target.needs})" if target.needs else ""))
    if target.relative and base is None:
        return TargetResult(target, NOT_MEASURED, value=value, why=f"no base value: {base_why}")
    if isinstance(target.threshold, str):
        threshold, why = lookup(metrics, target.threshold)
        if threshold is None:
            return TargetResult(target, NOT_MEASURED, value=value, base=base, why=why)
    else:
        threshold = float(target.threshold)
    bound = {"": threshold, "+": (base or 0.0) + threshold, "*": (base or 0.0) * threshold}[target.of_base]
    ok = {"<=": value <= bound, "<": value < bound, ">=": value >= bound, ">": value > bound,
          "within": abs(value - (base or 0.0)) <= abs(bound)}[target.op]
    return TargetResult(target, MET if ok else NOT_MET, value=value, base=base, bound=bound)


def evaluate_targets(metrics: dict, targets: tuple[Target, ...] = TARGETS) -> list[TargetResult]:
    """Every target on the `metrics` dict of eval/metrics.json, in declaration order."""
    return [evaluate_target(t, metrics) for t in targets]


def targets_count(results: list[TargetResult]) -> str:
    """`targets: 9 met, 3 not met, 3 not measured (of 15)`."""
    counts = [(s, sum(r.status == s for r in results)) for s in (MET, NOT_MET, NOT_MEASURED)]
    return "targets: " + ", ".join(f"{n} {s}" for s, n in counts) + f" (of {len(results)})"


def targets_line(results: list[TargetResult]) -> str:
    """`targets met 9/15: a, b; not met: c; not measured: d` (the CLI summary's last line)."""
    groups = {s: [r.target.name for r in results if r.status == s] for s in (MET, NOT_MET, NOT_MEASURED)}
    text = f"targets met {len(groups[MET])}/{len(results)}: " + (", ".join(groups[MET]) or "none")
    for status in (NOT_MET, NOT_MEASURED):
        if groups[status]:
            text += f"; {status}: " + ", ".join(groups[status])
    return text
