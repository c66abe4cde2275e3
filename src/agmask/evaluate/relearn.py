"""Relearning attack: k LoRA steps of plain language modelling on the concept's `relearn` passages
(related text that never states the concept), then the recovered fraction of the answer log-prob.

The attacker fine-tunes the unlearned adapter itself, with its gradient masks re-registered (they do
not survive save/load), so a masked adapter stays masked under attack. The adapter's weights are
restored exactly afterwards: the later metrics see the adapter as trained.
"""
from __future__ import annotations

import statistics

import torch

from agmask.evaluate.attacks import ATTACK_SET, answer_logprob, attack_entry
from agmask.evaluate.context import EvalContext
from agmask.evaluate.registry import metric
from agmask.lora import gradient_masks


def _lm_batch(tokenizer, texts: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = [tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
    width = max(len(e) for e in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    return ids.to(device), mask.to(device)


def relearn_steps(ctx: EvalContext, steps: int) -> list[float]:
    """Train the adapter `steps` steps on the relearn passages (language-modelling loss); returns the losses."""
    model, adapter = ctx.model, ctx.adapter
    name = adapter.name
    params = [p for n, p in model.named_parameters() if "lora_" in n and f".{name}." in n]
    for p in params:
        p.requires_grad_(True)
    texts = [it.prompt for it in ctx.spec.relearn]
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0)).tolist()
    opt = torch.optim.AdamW(params, lr=ctx.config.relearn_lr, weight_decay=0.0)
    device = next(model.parameters()).device
    losses = []
    try:
        with gradient_masks(model, name, adapter.mask, adapter.layers), torch.enable_grad():
            for step in range(steps):
                chunk = [texts[order[(step * ctx.config.relearn_batch + i) % len(texts)]]
                         for i in range(ctx.config.relearn_batch)]
                ids, mask = _lm_batch(ctx.tokenizer, chunk, device)
                labels = ids.masked_fill(mask == 0, -100)  # padding by the attention mask, never by pad id
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
    finally:
        for p in params:
            p.requires_grad_(False)
    return losses


@metric("attack_relearn", "attack")
def attack_relearn(ctx: EvalContext) -> dict:
    """Relearning: k LoRA steps on related text (masks re-applied); recovered fraction of the answer log-prob."""
    if ctx.adapter is None:
        return {"set": ATTACK_SET, "skipped": "no adapter handle (masks unknown)", "variants": {}}
    items = [it for _, it in ctx.items(ATTACK_SET)]
    base = statistics.fmean(r["answer_logprob"] for r in ctx.scores(ATTACK_SET, "base"))
    unlearned = statistics.fmean(r["answer_logprob"] for r in ctx.scores(ATTACK_SET, "adapted"))
    snapshot = {n: p.detach().clone() for n, p in ctx.model.named_parameters() if "lora_" in n}
    k = ctx.config.relearn_steps
    try:
        losses = relearn_steps(ctx, k)
        attacked = statistics.fmean(answer_logprob(ctx.model, ctx.tokenizer, ctx.spec, ATTACK_SET, it) for it in items)
    finally:
        with torch.no_grad():
            for n, p in ctx.model.named_parameters():
                if n in snapshot:
                    p.copy_(snapshot[n])
    entry = attack_entry(base, unlearned, attacked, ctx.config.near_zero_nats, steps=k, lr=ctx.config.relearn_lr,
                         batch=ctx.config.relearn_batch, first_loss=losses[0] if losses else None,
                         last_loss=losses[-1] if losses else None, masked=ctx.adapter.mask is not None)
    return {"set": ATTACK_SET, "n": len(items), "near_zero_nats": ctx.config.near_zero_nats,
            "variants": {f"k={k}": entry}}
