"""Attacks on the unlearned model, each reported as the recovered fraction of the answer log-prob:

    recovered = (after attack - unlearned) / (base - unlearned)

0 = the attack recovers nothing, 1 = back to the base model. The fraction is only defined when the
adapter lowered the answer log-prob by at least `near_zero_nats`; otherwise it is null with a flag:
`near_zero_denominator` (|base - unlearned| below the threshold) or `unlearned_above_base` (the adapter
raised the answer's log-prob: there is nothing to recover, and a ratio would only mislead).

Relearning attack (DESIGN.md: fixed k LoRA steps on `relearn`): not implemented yet. Its place is a
new module `agmask/evaluate/relearn.py` with `@metric("attack_relearn", "attack")` returning
`{"set": ..., "variants": {"k=<steps>": attack_entry(...)}}` (see `attack_entry`), imported in
`agmask/evaluate/__init__.py` after this module. The report's attack table and the CLI summary list
every metric of kind "attack", so nothing else needs to change.
"""
from __future__ import annotations

import statistics

import torch.nn as nn

from agmask.concepts.schema import ConceptSpec, PromptItem
from agmask.distributed import map_sharded
from agmask.evaluate.context import EvalContext
from agmask.evaluate.quantize import swapped_weights
from agmask.evaluate.registry import metric
from agmask.scoring import prefix_for
from agmask.scoring.continuation import score_continuations
from agmask.scoring.encode import closing_for

ATTACK_SET = "forget_eval"
NEAR_ZERO = "near_zero_denominator"
NOT_FORGOTTEN = "unlearned_above_base"


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


def answer_logprob(model: nn.Module, tokenizer, spec: ConceptSpec, set_name: str, item: PromptItem) -> float:
    """The item's answer log-prob exactly as `score_items` computes it (max over aliases), without the MC view."""
    close = closing_for(spec.lead_for(set_name, item))
    prefix = prefix_for(tokenizer, spec, set_name, item)
    return max(s.logprob for s in score_continuations(model, tokenizer, prefix, [a + close for a in spec.answers_for(item)]))


@metric("attack_quantization", "attack")
def attack_quantization(ctx: EvalContext) -> dict:
    """Per-channel round-to-nearest quantisation of the merged fp32 weights (int8, int4): recovered fraction."""
    items = [it for _, it in ctx.items(ATTACK_SET)]
    base = statistics.fmean(r["answer_logprob"] for r in ctx.scores(ATTACK_SET, "base"))
    unlearned = statistics.fmean(r["answer_logprob"] for r in ctx.scores(ATTACK_SET, "adapted"))
    variants = {}
    for bits in ctx.config.quant_bits:
        means = {}
        with ctx.use("base") as model:  # adapter off: its delta lives in the swapped weights instead
            for merged in (True, False):
                with swapped_weights(model, bits, merged=merged) as err:
                    means[merged] = statistics.fmean(map_sharded(
                        lambda its: [answer_logprob(model, ctx.tokenizer, ctx.spec, ATTACK_SET, it) for it in its],
                        items))
                    means[merged, "err"] = err
        vs_qbase, _ = recovered_fraction(means[False], unlearned, means[True], ctx.config.near_zero_nats)
        variants[f"int{bits}"] = attack_entry(
            base, unlearned, means[True], ctx.config.near_zero_nats,
            quantized_base_logprob=means[False], recovered_fraction_vs_quantized_base=vs_qbase,
            max_abs_weight_error=max(means[True, "err"], means[False, "err"]))
    return {"set": ATTACK_SET, "n": len(items), "near_zero_nats": ctx.config.near_zero_nats,
            "scope": "LoRA-wrapped Linear weights only (merged adapter and base alike); other weights unchanged",
            "variants": variants}
