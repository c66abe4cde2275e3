"""Attacks on the unlearned model, each reported as the recovered fraction of the answer log-prob:

    recovered = (after attack - unlearned) / (base - unlearned)

0 = the attack recovers nothing, 1 = back to the base model. The fraction is only defined when the
adapter lowered the answer log-prob by at least `near_zero_nats`; otherwise it is null with a flag:
`near_zero_denominator` (|base - unlearned| below the threshold) or `unlearned_above_base` (the adapter
raised the answer's log-prob: there is nothing to recover, and a ratio would only mislead).

A summed log-prob of a title is dominated by its tail tokens, so beside the fraction every attack
reports whether the model would *answer* the concept again: on the base-known prompts of
`attack_sets`, the multiple-choice top-1 count, the mean MC share and the median first-token rank,
for the base model, the unlearned model and the attacked one (`base_known`).

Attacks, each a registered metric of kind "attack" (`variants.{name}` -> `attack_entry`):
- `attack_quantization` (here): per-channel RTN of the LoRA-wrapped weights only (confined);
- `attack_quantization_full` (here): every linear weight of the merged model, several schemes;
- `attack_relearn` (relearn.py): the adapter itself trained on `relearn`, masks re-applied (confined);
- `attack_relearn_full` (relearn_full.py): a fresh LoRA on every linear layer of the merged model.
Each declares `report=partial(attack_tables, name)`: its variants' rows of the one attack table; the CLI
summary's worst-attack line reads every metric of kind "attack".
"""
from __future__ import annotations

import statistics
from functools import partial, wraps
from typing import Callable

import torch.nn as nn

from agmask.concepts.schema import ConceptSpec, PromptItem
from agmask.distributed import map_sharded
from agmask.evaluate.context import EvalContext
from agmask.evaluate.quantize import QuantizationUnavailable, quantizer_for, swapped_linears, swapped_weights
from agmask.evaluate.registry import metric
from agmask.evaluate.tables import Table
from agmask.scoring import PrefixKV, prefix_for, score_item
from agmask.scoring.continuation import score_continuations
from agmask.scoring.encode import closing_for

ATTACK_SET = "forget_eval"
NEAR_ZERO = "near_zero_denominator"
NOT_FORGOTTEN = "unlearned_above_base"
NOT_RUN = "not_run"


def recovered_fraction(base: float, unlearned: float, attacked: float, near_zero: float = 0.1) -> tuple[float | None, str | None]:
    """(fraction, flag); the fraction is None, with a flag, unless base - unlearned >= near_zero."""
    denominator = base - unlearned
    if abs(denominator) < near_zero:
        return None, NEAR_ZERO
    if denominator < 0:
        return None, NOT_FORGOTTEN
    return (attacked - unlearned) / denominator, None


def attack_entry(base: float, unlearned: float, attacked: float, near_zero: float, **extra) -> dict:
    """One attack variant's row in metrics.json (mean answer log-probs in nats)."""
    fraction, flag = recovered_fraction(base, unlearned, attacked, near_zero)
    return {"recovered_fraction": fraction, "flag": flag,
            "mean_answer_logprob": {"base": base, "unlearned": unlearned, "attacked": attacked}, **extra}


def not_run_entry(reason: str) -> dict:
    """A variant that could not run here (the reason says why); listed, never counted as a result."""
    return {"recovered_fraction": None, "flag": NOT_RUN, "mean_answer_logprob": None, "not_run": reason}


ATTACK_HEADER = ("attack", "variant", "recovered fraction", "flag", "log-prob: base", "unlearned", "after attack",
                 "MC top-1 (base-known): base", "unlearned", "after attack", "MC share: base", "unlearned",
                 "after attack", "median rank: base", "unlearned", "after attack", "details")
ATTACK_NOTE = ("recovered fraction = (after attack - unlearned) / (base - unlearned); 0 = nothing recovered, 1 = back "
               "to the base model; null (with a flag) unless the adapter lowered the answer log-prob by at least the "
               "threshold. MC top-1 count, MC share and median first-token rank are on the base-known prompts of the "
               "attack sets: whether the model would answer the concept again.")


def attack_tables(name: str, value: dict) -> list[Table]:
    """The rows of attack metric `name` in the report's attack table: one per variant."""
    rows = []
    for variant, e in (value.get("variants") or {}).items():
        lp, known = e.get("mean_answer_logprob") or {}, e.get("base_known") or {}
        view = lambda key: [(known.get(w) or {}).get(key) for w in ("base", "unlearned", "attacked")]  # noqa: E731
        rows.append([name, variant, e.get("recovered_fraction"), e.get("flag"), lp.get("base"), lp.get("unlearned"),
                     lp.get("attacked"), *view("mc_top1_count"), *view("mc_share"), *view("median_first_token_rank"),
                     {k: v for k, v in e.items()
                      if k not in ("recovered_fraction", "flag", "mean_answer_logprob", "base_known")}])
    return [Table("Attacks", ATTACK_HEADER, rows, ATTACK_NOTE)]


def answer_logprob(model: nn.Module, tokenizer, spec: ConceptSpec, set_name: str, item: PromptItem,
                   kv: PrefixKV | None = None) -> float:
    """The item's answer log-prob exactly as `score_items` computes it (max over aliases), without the MC view."""
    close = closing_for(spec.lead_for(set_name, item))
    prefix = prefix_for(tokenizer, spec, set_name, item)
    answers = [a + close for a in spec.answers_for(item)]
    return max(s.logprob for s in score_continuations(model, tokenizer, prefix, answers, kv=kv, close=close))


def answer_view(rows: list[dict]) -> dict:
    """Would the model answer the concept: MC top-1 count and mean share, median first-token rank of `rows`."""
    mc = [r for r in rows if r.get("mc_share") is not None]
    return {"n": len(rows), "mc_n": len(mc), "mc_top1_count": sum(bool(r["mc_top1"]) for r in mc) if mc else None,
            "mc_share": statistics.fmean(r["mc_share"] for r in mc) if mc else None,
            "median_first_token_rank": statistics.median(r["first_token_rank"] for r in rows) if rows else None}


def _attack_items(ctx: EvalContext) -> list[tuple[str, int, PromptItem, bool]]:
    """(set, index, item, base-known) to score under attack: every selected ATTACK_SET item (the mean log-prob)
    and the base-known items of the other attack sets (the answer view)."""
    out = []
    for set_name in dict.fromkeys((ATTACK_SET, *ctx.config.attack_sets)):
        known = ctx.base_known(set_name)
        out += [(set_name, i, it, i in known) for i, it in ctx.items(set_name)
                if set_name == ATTACK_SET or i in known]
    return out


def reference(ctx: EvalContext) -> dict:
    """Mean ATTACK_SET answer log-prob and the base-known answer view of the base and the unlearned model."""
    out = {}
    for which, label in (("base", "base"), ("adapted", "unlearned")):
        rows = []
        for set_name in dict.fromkeys((ATTACK_SET, *ctx.config.attack_sets)):
            known = ctx.base_known(set_name)
            rows += [r for r in ctx.scores(set_name, which) if r["index"] in known]
        out[label] = {"mean": statistics.fmean(r["answer_logprob"] for r in ctx.scores(ATTACK_SET, which)),
                      "view": answer_view(rows)}
    return out


def score_attacked(ctx: EvalContext, model: nn.Module) -> dict:
    """`model` (the attacked model, as it is now) scored like the base and unlearned sides of `reference`."""
    todo = _attack_items(ctx)
    kv = PrefixKV()  # the attacked weights' own prefix cache (the prompts share their chat template's opening)
    rows = map_sharded(lambda part: [score_item(model, ctx.tokenizer, ctx.spec, s, i, it, kv=kv).to_dict()
                                     for s, i, it, _ in part], todo)
    mean = statistics.fmean(r["answer_logprob"] for r, (s, *_) in zip(rows, todo) if s == ATTACK_SET)
    return {"mean": mean, "view": answer_view([r for r, (*_, known) in zip(rows, todo) if known])}


def scored_entry(ctx: EvalContext, ref: dict, attacked: dict, **extra) -> dict:
    """`attack_entry` plus the base-known answer view of base, unlearned and attacked."""
    return attack_entry(ref["base"]["mean"], ref["unlearned"]["mean"], attacked["mean"], ctx.config.near_zero_nats,
                        base_known={"sets": list(dict.fromkeys(ctx.config.attack_sets)),
                                    "base": ref["base"]["view"], "unlearned": ref["unlearned"]["view"],
                                    "attacked": attacked["view"]}, **extra)


def attack_result(ctx: EvalContext, variants: dict, **info) -> dict:
    """An attack metric's value: the attacked set and its size, the threshold, what it did (`info`), the variants."""
    return {"set": ATTACK_SET, "n": len(ctx.items(ATTACK_SET)), "near_zero_nats": ctx.config.near_zero_nats, **info,
            "variants": variants}


def attack_skipped(reason: str) -> dict:
    """An attack metric's value when it cannot or need not run (a note, not a result)."""
    return {"set": ATTACK_SET, "skipped": reason, "variants": {}}


def over_option(option: str, noun: str) -> Callable:
    """Decorator of an attack metric run over the variants `evaluate.<option>` lists: `fn(ctx, chosen, ref)`,
    `ref` the base and unlearned sides (`reference`); an empty list is skipped with the reason."""
    def decorate(fn: Callable[[EvalContext, tuple, dict], dict]) -> Callable[[EvalContext], dict]:
        @wraps(fn)
        def run(ctx: EvalContext) -> dict:
            chosen = getattr(ctx.config, option)
            if not chosen:
                return attack_skipped(f"no {noun} (evaluate.{option} is empty)")
            return fn(ctx, chosen, reference(ctx))

        return run

    return decorate


@metric("attack_quantization", "attack", report=partial(attack_tables, "attack_quantization"))
def attack_quantization(ctx: EvalContext) -> dict:
    """Per-channel round-to-nearest quantisation of the merged fp32 LoRA-wrapped weights (int8, int4): recovered fraction."""
    items = [it for _, it in ctx.items(ATTACK_SET)]
    ref = reference(ctx)
    variants = {}
    for bits in ctx.config.quant_bits:
        with ctx.use("base") as model:  # adapter off: its delta lives in the swapped weights instead
            with swapped_weights(model, bits, merged=True) as err_merged:
                attacked = score_attacked(ctx, model)
            with swapped_weights(model, bits, merged=False) as err_base:
                kv = PrefixKV()  # the quantised base's own
                quantized_base = statistics.fmean(map_sharded(
                    lambda its: [answer_logprob(model, ctx.tokenizer, ctx.spec, ATTACK_SET, it, kv=kv) for it in its],
                    items))
        vs_qbase, _ = recovered_fraction(quantized_base, ref["unlearned"]["mean"], attacked["mean"],
                                         ctx.config.near_zero_nats)
        variants[f"int{bits}"] = scored_entry(ctx, ref, attacked, quantized_base_logprob=quantized_base,
                                              recovered_fraction_vs_quantized_base=vs_qbase,
                                              max_abs_weight_error=max(err_merged, err_base))
    return attack_result(ctx, variants, scope="LoRA-wrapped Linear weights only (merged adapter and base alike); "
                                              "other weights unchanged")


@metric("attack_quantization_full", "attack", report=partial(attack_tables, "attack_quantization_full"))
@over_option("full_quant_schemes", "scheme")
def attack_quantization_full(ctx: EvalContext, schemes: tuple[str, ...], ref: dict) -> dict:
    """Every linear weight of the merged model quantised (int8, int4, group-wise int4, NF4 where it runs): recovered fraction, MC top-1, share, rank."""
    device = next(ctx.model.parameters()).device
    variants = {}
    for scheme in schemes:
        try:
            quantize = quantizer_for(scheme, ctx.config.quant_group_size, device)
        except QuantizationUnavailable as e:
            variants[scheme] = not_run_entry(str(e))
            continue
        with ctx.use("base") as model, swapped_linears(model, quantize, merged=True, scope="all") as stats:
            attacked = score_attacked(ctx, model)
        variants[scheme] = scored_entry(ctx, ref, attacked, weights_quantized=stats["weights"],
                                        max_abs_weight_error=stats["max_abs_error"])
    return attack_result(ctx, variants, group_size=ctx.config.quant_group_size,
                         scope="every Linear weight of the model with the adapter merged in fp32 (lm_head included)")
