"""Relearning attack without the mask: what a user with the weights would do.

The unlearning adapter (every active one, in incremental mode) is merged into the base weights, and a
fresh LoRA (rank `full_relearn_r`, every linear layer of every decoder block) is trained on top with a
plain language-modelling loss, in ONE run measured after each of `full_relearn_steps` cumulative steps.
The same attack on as many tokens of unrelated general text (evaluate/data/general_corpus.txt) is the
control: relearning that the control matches is not about the concept (unrelated text restores RMU,
Łucki et al.). Published anchor: a few relearning examples recover most unlearned knowledge (Deeb &
Roger).

`attacker_lora` is a context manager: on exit the attacker is deleted, the Linear modules PEFT wrapped
for it are unwrapped, the previous adapters are active again, every parameter has its `requires_grad`
back, and the base weights are the original tensors (bit for bit; tests check all of it).
"""
from __future__ import annotations

from functools import partial
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
from peft import LoraConfig, PeftModel

from agmask.evaluate.attacks import attack_result, attack_tables, over_option, score_attacked, scored_entry
from agmask.evaluate.context import EvalContext
from agmask.evaluate.metrics_utility import general_corpus
from agmask.evaluate.quantize import lora_layers, swapped_linears
from agmask.evaluate.registry import metric
from agmask.evaluate.relearn import lm_train, pad_id, passage_ids
from agmask.lora.masked import _quiet_peft, freeze_all_but
from agmask.models.arch import decoder_layers
from agmask.scoring.encode import tokens

ATTACKER = "agmask_relearn_attacker"


def decoder_linear_names(peft_model: PeftModel) -> list[str]:
    """Names (as PEFT keys them) of every Linear of the decoder blocks; a LoRA-wrapped one by its wrapper."""
    inner = peft_model.base_model.model
    blocks = {id(m) for m in decoder_layers(peft_model)}
    wrappers = lora_layers(peft_model)
    inside = {id(m) for layer in wrappers for m in layer.modules() if m is not layer}  # base_layer, lora_A, lora_B
    names = []
    for block_name, block in inner.named_modules():
        if id(block) in blocks:
            names += [f"{block_name}.{name}" for name, m in block.named_modules()
                      if any(m is w for w in wrappers) or (isinstance(m, nn.Linear) and id(m) not in inside)]
    return names


@contextmanager
def attacker_lora(peft_model: PeftModel, r: int = 8, seed: int = 0) -> Iterator[list[nn.Parameter]]:
    """The active adapters merged into the base weights and a fresh LoRA on every decoder Linear, the only
    active adapter; yields its trainable parameters. Everything is put back on exit (module docstring)."""
    if ATTACKER in peft_model.peft_config:
        raise RuntimeError(f"adapter {ATTACKER!r} already exists")
    tuner = peft_model.base_model
    previous = list(tuner.active_adapters)
    grads = {id(p): p.requires_grad for p in peft_model.parameters()}
    params = {id(p): p for p in peft_model.parameters()}
    targets = decoder_linear_names(peft_model)
    inner = peft_model.base_model.model
    plain = [name for name in targets if isinstance(inner.get_submodule(name), nn.Linear)]  # PEFT will wrap these
    config = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, bias="none", init_lora_weights=True,
                        target_modules=targets, task_type="CAUSAL_LM")
    with swapped_linears(peft_model, None, merged=True, scope="lora"):  # W := W + delta of the active adapters
        try:
            with torch.random.fork_rng(devices=[]), _quiet_peft():
                torch.manual_seed(seed)
                peft_model.add_adapter(ATTACKER, config)
            tuner.set_adapter([ATTACKER])  # the unlearning adapters' LoRA paths off: their deltas are merged
            freeze_all_but(peft_model, ATTACKER)
            yield [p for n, p in peft_model.named_parameters() if p.requires_grad]
        finally:
            tuner.set_adapter(previous, inference_mode=True)  # first, so deleting the attacker picks no default
            if ATTACKER in peft_model.peft_config:
                peft_model.delete_adapter(ATTACKER)
            for name in plain:  # the wrappers PEFT made for the attacker hold no adapter now: unwrap them
                wrapper = inner.get_submodule(name)
                if hasattr(wrapper, "get_base_layer"):
                    parent, _, child = name.rpartition(".")
                    setattr(inner.get_submodule(parent), child, wrapper.get_base_layer())
            for pid, flag in grads.items():
                params[pid].requires_grad_(flag)


def control_sequences(tokenizer, like: list[list[int]]) -> list[list[int]]:
    """Windows of the general corpus with exactly the token counts of `like` (the relearn passages), in order,
    each starting with the same special tokens the tokenizer adds to a document."""
    specials = tokenizer("", add_special_tokens=True)["input_ids"]
    corpus = tokens(tokenizer, general_corpus())
    out, at = [], 0
    for seq in like:
        n = len(seq) - len(specials)
        if at + n > len(corpus):
            at = 0
        out.append(specials + corpus[at : at + n])
        at += n
    return out


@metric("attack_relearn_full", "attack", report=partial(attack_tables, "attack_relearn_full"))
@over_option("full_relearn_steps", "checkpoint")
def attack_relearn_full(ctx: EvalContext, checkpoints: tuple[int, ...], ref: dict) -> dict:
    """Relearning without the mask: a fresh LoRA on every linear layer of the merged model, k steps on relearn passages (control: as much general text); recovered fraction, MC top-1, share, rank."""
    relearn = passage_ids(ctx.tokenizer, [it.prompt for it in ctx.spec.relearn])
    data = {"relearn": relearn, "control": control_sequences(ctx.tokenizer, relearn)}
    variants, info = {}, {}
    for data_name, sequences in data.items():
        with attacker_lora(ctx.model, ctx.config.full_relearn_r) as params:
            info = {"trainable_parameters": sum(p.numel() for p in params), "lora_matrices": len(params)}

            def measure(done: int, losses: list[float], data_name=data_name) -> None:
                if done in checkpoints:
                    variants[f"{data_name} k={done}"] = scored_entry(
                        ctx, ref, score_attacked(ctx, ctx.model), data=data_name, steps=done,
                        lr=ctx.config.full_relearn_lr, batch=ctx.config.relearn_batch, first_loss=losses[0],
                        last_loss=losses[-1])

            lm_train(ctx.model, params, sequences, max(checkpoints), ctx.config.relearn_batch,
                     ctx.config.full_relearn_lr, pad_id(ctx.tokenizer), on_step=measure)
    return attack_result(ctx, variants, scope=f"a fresh LoRA (r {ctx.config.full_relearn_r}) on every decoder "
                                              "Linear, the unlearning adapter merged; one run per data, measured at "
                                              "each checkpoint",
                         checkpoints=list(checkpoints),
                         control="general_corpus.txt windows of the relearn passages' token counts", **info)
