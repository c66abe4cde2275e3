"""Relearning attack (confined): k LoRA steps of plain language modelling on the concept's `relearn`
passages (related text that never states the concept), then the recovered fraction of the answer
log-prob and the base-known answer view (see attacks.py).

The attacker fine-tunes the unlearned adapter itself, with its gradient masks re-registered (they do
not survive save/load), so a masked adapter stays masked under attack. The adapter's weights are
restored exactly afterwards: the later metrics see the adapter as trained. `attack_relearn_full`
(relearn_full.py) is the unconstrained attack.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn as nn

from agmask.evaluate.attacks import attack_result, attack_skipped, attack_tables, reference, score_attacked, scored_entry
from agmask.evaluate.context import EvalContext
from agmask.evaluate.internals import right_pad
from agmask.evaluate.registry import metric
from agmask.lora import gradient_masks


def passage_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each passage tokenised as a document (with the tokenizer's special tokens, e.g. BOS)."""
    return [tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]


def lm_train(model: nn.Module, params: list[nn.Parameter], sequences: list[list[int]], steps: int, batch: int,
             lr: float, pad_id: int, on_step: Callable[[int, list[float]], None] | None = None) -> list[float]:
    """`steps` AdamW steps of the language-modelling loss on `sequences` (batches of `batch`, in one seeded
    shuffled order, cycling); `on_step(done_steps, losses)` after each. Returns the losses."""
    order = torch.randperm(len(sequences), generator=torch.Generator().manual_seed(0)).tolist()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device = next(model.parameters()).device
    losses: list[float] = []
    with torch.enable_grad():
        for step in range(steps):
            chunk = [sequences[order[(step * batch + i) % len(sequences)]] for i in range(batch)]
            ids, mask = right_pad(chunk, pad_id)
            ids, mask = ids.to(device), mask.to(device)
            labels = ids.masked_fill(mask == 0, -100)  # padding by the attention mask, never by pad id
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step + 1, losses)
    return losses


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def relearn_steps(ctx: EvalContext, steps: int) -> list[float]:
    """Train the adapter `steps` steps on the relearn passages (language-modelling loss); returns the losses."""
    model, adapter = ctx.model, ctx.adapter
    name = adapter.name
    params = [p for n, p in model.named_parameters() if "lora_" in n and f".{name}." in n]
    for p in params:
        p.requires_grad_(True)
    try:
        with gradient_masks(model, name, adapter.mask, adapter.layers):
            return lm_train(model, params, passage_ids(ctx.tokenizer, [it.prompt for it in ctx.spec.relearn]), steps,
                            ctx.config.relearn_batch, ctx.config.relearn_lr, pad_id(ctx.tokenizer))
    finally:
        for p in params:
            p.requires_grad_(False)


@metric("attack_relearn", "attack", report=partial(attack_tables, "attack_relearn"))
def attack_relearn(ctx: EvalContext) -> dict:
    """Relearning: k LoRA steps on related text (masks re-applied); recovered fraction of the answer log-prob."""
    if ctx.adapter is None:
        return attack_skipped("no adapter handle (masks unknown)")
    ref = reference(ctx)
    snapshot = {n: p.detach().clone() for n, p in ctx.model.named_parameters() if "lora_" in n}
    k = ctx.config.relearn_steps
    try:
        losses = relearn_steps(ctx, k)
        attacked = score_attacked(ctx, ctx.model)
    finally:
        with torch.no_grad():
            for n, p in ctx.model.named_parameters():
                if n in snapshot:
                    p.copy_(snapshot[n])
    entry = scored_entry(ctx, ref, attacked, steps=k, lr=ctx.config.relearn_lr, batch=ctx.config.relearn_batch,
                         first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None,
                         masked=ctx.adapter.mask is not None)
    return attack_result(ctx, {f"k={k}": entry})
