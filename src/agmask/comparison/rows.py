"""A compare row: the numbers one variant x seed takes from its evaluation (metrics.json), and mean / sd over seeds.

Each column is read from a metric when that metric ran (a leaner `compare.metrics` gives fewer columns).
Where a metric stores a bootstrap interval over prompts (`evaluate/intervals.py`) the row keeps it under
`ci`: with a single seed it is the only uncertainty there is, and the summary shows it instead of an sd.
"""
from __future__ import annotations

import math
import re
import statistics

# column -> what it is (the report and the CLI print these words)
COLUMNS = {
    "forget_known_mc_top1": "MC top-1 rate on the base-known forget_eval + probes prompts (0 = forgotten)",
    "forget_known_mc_share": "mean MC share of the concept on those prompts (chance = 1 / candidates)",
    "forget_known_median_rank": "median first-token rank of the answer on those prompts",
    "forget_eval_dlogp": "mean change of the forget_eval answer log-prob (nats; negative = lowered)",
    "neighbours_abs_dlogp": "mean |change| of the neighbours' answer log-probs (nats)",
    "neighbours_anchored_abs_dlogp": "the same on anchored neighbours (answer in a training set)",
    "neighbours_unseen_abs_dlogp": "the same on unseen neighbours (answer in no training set): the locality that counts",
    "retain_kl": "KL(base || adapted) per token on the base's greedy retain_eval replies",
    "train_seconds": "wall time of the training run",
    "eval_seconds": "wall time of the evaluation",
    "steps_run": "optimiser steps (early stopping is off: the configured steps)",
}
ATTACK_COLUMNS = {"recovered": "recovered fraction of the forget_eval answer log-prob (null: undefined, see flag)",
                  "mc_top1_vs_base": "base-known MC top-1 count after the attack / the base model's"}
# column -> (metric, key of its `intervals`)
INTERVALS = {
    "forget_known_mc_top1": ("forget_base_known", "adapted.mc_top1_rate"),
    "forget_known_mc_share": ("forget_base_known", "adapted.mc_share"),
    "neighbours_abs_dlogp": ("locality", "mean_abs_delta_answer_logprob"),
    "neighbours_anchored_abs_dlogp": ("locality", "anchored.mean_abs_delta_answer_logprob"),
    "neighbours_unseen_abs_dlogp": ("locality", "unseen.mean_abs_delta_answer_logprob"),
    "retain_kl": ("kl_greedy", "sets.retain_eval.mean_kl_per_token"),
}
ATTACK_PREFIX = {"attack_relearn_full": "", "attack_quantization_full": "quant_", "attack_relearn": "relearn_masked_",
                 "attack_quantization": "quant_lora_"}


def attack_label(metric: str, variant: str) -> str:
    """`relearn k=20` of attack_relearn_full -> `relearn_k20`; `int4` of attack_quantization_full -> `quant_int4`."""
    text = re.sub(r"[^a-z0-9]+", "_", variant.lower().replace("k=", "k")).strip("_")
    return ATTACK_PREFIX.get(metric, metric.removeprefix("attack_") + "_") + text


def _get(data: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _ratio(num, den) -> float | None:
    return None if num is None or not den else num / den


def metric_columns(metrics: dict) -> tuple[dict, dict]:
    """(columns, intervals) of one evaluation: `metrics` is metrics.json's `metrics` object."""
    row: dict = {}
    fk = metrics.get("forget_base_known")
    if fk:
        row.update(forget_known_mc_top1=fk["adapted"]["mc_top1_rate"], forget_known_mc_share=fk["adapted"]["mc_share"],
                   forget_known_median_rank=fk["adapted"]["median_first_token_rank"],
                   forget_eval_dlogp=fk["forget_eval_mean_logprob_change"])
    loc = metrics.get("locality")
    if loc:
        row.update(neighbours_abs_dlogp=loc.get("mean_abs_delta_answer_logprob"),
                   neighbours_anchored_abs_dlogp=_get(loc, "anchored.mean_abs_delta_answer_logprob"),
                   neighbours_unseen_abs_dlogp=_get(loc, "unseen.mean_abs_delta_answer_logprob"))
    if "kl_greedy" in metrics:
        row["retain_kl"] = _get(metrics["kl_greedy"], "sets.retain_eval.mean_kl_per_token")
    for name, metric in metrics.items():
        if metric.get("kind") != "attack":
            continue
        for variant, entry in (metric.get("variants") or {}).items():
            label = attack_label(name, variant)
            row[f"{label}_recovered"] = entry.get("recovered_fraction")
            if entry.get("flag"):
                row[f"{label}_flag"] = entry["flag"]
            known = entry.get("base_known") or {}
            row[f"{label}_mc_top1_vs_base"] = _ratio(_get(known, "attacked.mc_top1_count"),
                                                     _get(known, "base.mc_top1_count"))
    intervals = {}
    for column, (metric, key) in INTERVALS.items():
        iv = ((metrics.get(metric) or {}).get("intervals") or {}).get(key)
        if iv and iv.get("low") is not None:
            intervals[column] = [iv["low"], iv["high"]]
    return row, intervals


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summarise(rows: list[dict]) -> dict:
    """Mean and sd over seeds of every numeric column (sd null with one seed; then `ci` is that row's
    bootstrap intervals over prompts); `n` counts the seeds with a value."""
    columns = list(dict.fromkeys(c for r in rows for c in r["columns"]))
    out: dict = {"n_seeds": len(rows), "mean": {}, "sd": {}, "n": {}}
    for column in columns:
        values = [r["columns"][column] for r in rows if _number(r["columns"].get(column))]
        if not values:
            continue
        out["mean"][column] = statistics.fmean(values)
        out["sd"][column] = statistics.stdev(values) if len(values) > 1 else None
        out["n"][column] = len(values)
    if len(rows) == 1:
        out["ci"] = rows[0].get("ci", {})
    return out


def column_help(columns: list[str]) -> dict[str, str]:
    """What each column is, attack columns included."""
    out = {}
    for c in columns:
        if c in COLUMNS:
            out[c] = COLUMNS[c]
        else:
            suffix = next((s for s in ATTACK_COLUMNS if c.endswith("_" + s)), None)
            if suffix:
                out[c] = f"{c.removesuffix('_' + suffix)}: {ATTACK_COLUMNS[suffix]}"
    return out
