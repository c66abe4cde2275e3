"""Stage 6, unlearn: train the concept's adapter and save it as a standard PEFT adapter.

Writes `adapters/<concept>/` (adapter_config.json, adapter_model.safetensors, mask.safetensors),
`unlearn/log.jsonl` (every loss term per step), `unlearn/summary.json` and `unlearn/loss.png`.
"""
from __future__ import annotations

from dataclasses import asdict, field
from pathlib import Path
from typing import Literal

from pydantic import field_validator

from agmask.config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, nearest, stage_options
from agmask.errors import StageError
from agmask.files import load_tensors, write_json, write_jsonl
from agmask.lora import masked_lora, save_adapter
from agmask.masking import layers_of
from agmask.unlearn import get_method
from agmask.unlearn.figures import loss_curves
from agmask.unlearn.trainer import train

NAME = "unlearn"
DIR = "unlearn"
DEPENDS: tuple[str, ...] = ("mask",)
EXTRA_OUTPUTS = ["adapters"]
PARALLEL = True  # several processes: the trainer shards each batch; DDP (through accelerate) averages the gradients


@stage_options
class Config:
    # The defaults are `agmask tune --budget full`'s choice on inception (default model; docs/TUNING.md).
    method: str = field(default="masked_lora", metadata={
        "help": "masked_lora, masked_refusal, unmasked_lora, random_mask, ga, npo or rmu (see agmask.unlearn.METHODS)"})
    steps: PositiveInt = field(default=40, metadata={"help": "optimiser steps"})
    batch_size: PositiveInt = field(default=4, metadata={"help": "forget prompts and retain prompts per step (each)"})
    lr: PositiveFloat = field(default=2e-3, metadata={"help": "AdamW learning rate"})
    r: PositiveInt = field(default=8, metadata={"help": "LoRA rank"})
    alpha: PositiveFloat = field(default=16.0, metadata={"help": "LoRA alpha (scaling = alpha / r)"})
    weight_decay: NonNegativeFloat = field(default=0.0, metadata={"help": "AdamW decoupled weight decay"})
    max_grad_norm: PositiveFloat = field(default=1.0, metadata={"help": "gradient clipping norm"})
    lr_schedule: Literal["constant", "linear", "cosine"] = field(default="constant", metadata={
        "help": "learning rate over the steps: constant, or decaying to 0 at the last step (linear, cosine)",
        "neutral_default": True})
    npo_beta: PositiveFloat = field(default=0.1, metadata={"help": "NPO temperature beta"})
    forget_weight: NonNegativeFloat = field(default=1.0, metadata={"help": "weight of the forget term"})
    first_token_weight: NonNegativeFloat = field(default=1.0, metadata={
        "help": "NPO on the answer's first token alone (masked_lora and its ablations); 0 = off"})
    first_token_margin: NonNegativeFloat = field(default=8.0, metadata={
        "help": "> 0: a hinge instead of NPO, pushing the first token `margin` nats down, no more"})
    retain_weight: NonNegativeFloat = field(default=8.0, metadata={"help": "weight of the KL to the base on retain_train"})
    keep_rest_weight: NonNegativeFloat = field(default=8.0, metadata={"help": (
        "weight of KL(base || adapted) at each forget answer's start over every token but the concept's first "
        "(renormalised): lower the concept without reshuffling the other answers; 0 = off")})
    target_weight: NonNegativeFloat = field(default=0.0, metadata={
        "help": "weight of the optional CE to the forget target (refusal); 0 = off"})
    rmu_steering: PositiveFloat = field(default=6.5, metadata={"help": "RMU: norm of the random control vector"})
    rmu_alpha: NonNegativeFloat = field(default=100.0, metadata={"help": "RMU: weight of the retain activation term"})
    early_stop_nats: NonNegativeFloat = field(default=0.0, metadata={
        "help": "stop once the forget log-ratio (train batches) is below -this; 0 = off"})
    max_forget: NonNegativeInt = field(default=0, metadata={"help": "use only the first N forget_train prompts; 0 = all"})
    forget_all_leads: bool = field(default=True, metadata={
        "help": "forget each forget_train prompt under every answer lead the training sets use"})
    forget_all_aliases: bool = field(default=True, metadata={
        "help": "forget every alias in the concept's answers (false: the first alias alone)"})
    forget_from_distinguishing_token: bool = field(default=True, metadata={"help": (
        "forget terms start at each answer's first token not shared with another candidate's start (`The` of "
        "`The Beatles` is left alone); false: at its first token")})
    forget_any_close: bool = field(default=True, metadata={"help": (
        "forget terms score an answer's closing quote as any token that closes it (`\"`, `\".`, `.\"`), as "
        "evaluation does, and so do the recommendation terms' titles; false: the bare quote, which the forget "
        "terms can push down alone")})
    retain_all_leads: bool = field(default=True, metadata={
        "help": "retain KL on each retain_train prompt under every answer lead the training sets use"})
    retain_without_concept_start: bool = field(default=True, metadata={
        "help": "retain KL: leave the concept's first answer token out at a retain answer's start"})
    cache_frozen_layers: bool = field(default=True, metadata={
        "help": "run the frozen layers below the adapter once, not every step"})

    # Recommendation prompts (recommend_train; masked_lora and its ablations). The preference term is on (its rule and
    # trials: docs/METHOD.md, "Keeping the rest of the recommendations"); the forget terms there are off.
    recommend_weight: NonNegativeFloat = field(default=0.0, metadata={"help": (
        "weight of the forget terms (NPO + first_token_weight x first-token term) on the concept's title after "
        "each recommend_train prompt's lead; 0 = off")})
    preference_weight: NonNegativeFloat = field(default=1.0, metadata={"help": (
        "weight of KL(base || adapted) over recommend_train's candidate distribution with the concept removed "
        "and renormalised (keeps the other recommendations); 0 = off")})
    recommend_batch_size: NonNegativeInt = field(default=2, metadata={"help": (
        "recommend_train prompts per step, each one packed forward with all its candidate titles; 0 = batch_size")})

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        from agmask.unlearn import METHODS

        if v not in METHODS:
            raise ValueError(f"unknown method {v!r}{nearest(v, METHODS)} (choose {', '.join(METHODS)})")
        return v


# The demo trains as many steps as the full budget: at 20 steps the retain KL is still coming down from its
# mid-training peak, and half B of the training sets moved twice as much as at 40 (docs/METHOD.md, "Demo steps").
PRESETS = {"demo": {}, "full": {}}


def run(cfg, run_dir: Path, session) -> None:
    conf: Config = session.stage_config(NAME)
    method = get_method(conf.method)
    masks = load_tensors(session.paths.mask)
    mask = masks["mask"]
    if not mask.any():
        raise StageError("the mask selects no neuron: rerun `agmask mask` with a larger mask.k or other layers")
    layers = layers_of(mask)
    param_mask = {"mask": mask, "random": masks["random"], "unmasked": None}[method.parameterisation]
    model, tokenizer, info = session.model()
    base = session.with_prior_adapters(model)
    out_dir = session.adapter_dir
    with masked_lora(base, param_mask, layers=layers, r=conf.r, alpha=conf.alpha, name=session.spec.name,
                     seed=cfg.seed) as adapter:
        try:
            rows = train(adapter, method, tokenizer, session.spec, conf, seed=cfg.seed, device=cfg.device,
                         reporter=session.reporter, gradient_checkpointing=cfg.gradient_checkpointing)
            save_adapter(adapter, out_dir)
        finally:
            session.drop_adapters(adapter.model)  # the session's model is the plain base again
    out = Path(run_dir) / DIR
    write_jsonl(out / "log.jsonl", rows)
    size = sum(f.stat().st_size for f in out_dir.iterdir())
    n_trainable = sum(p.numel() for p in adapter_params_of(out_dir))
    write_json(out / "summary.json", {
        "method": method.name, "parameterisation": method.parameterisation, "config": asdict(conf),
        "steps_run": len(rows), "seconds": rows[-1]["seconds"] if rows else 0.0, "final": rows[-1] if rows else {},
        "layers": layers, "masked_neurons": int(param_mask.sum()) if param_mask is not None else None,
        "total_mlp_neurons": info.num_layers * info.intermediate_size,
        "adapter_dir": str(out_dir.relative_to(run_dir)), "adapter_bytes": size, "adapter_parameters": n_trainable,
        "prior_adapters": [str(p) for p in session.prior_adapters],
        "recipe": session.recipe().record(),  # defaults, or tune/choice.json's trial (`--recipe`)
    })
    loss_curves(out / "loss.png", rows, f"{method.name} on {session.spec.name}: loss terms per step")


def adapter_params_of(directory: Path):
    return load_tensors(directory / "adapter_model.safetensors").values()
