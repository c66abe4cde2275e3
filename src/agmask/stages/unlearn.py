"""Stage 6, unlearn: train the concept's adapter and save it as a standard PEFT adapter.

Writes `adapters/<concept>/` (adapter_config.json, adapter_model.safetensors, mask.safetensors),
`unlearn/log.jsonl` (every loss term per step), `unlearn/summary.json` and `unlearn/loss.png`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from agmask.errors import StageError
from agmask.files import load_tensors, write_json, write_jsonl
from agmask.lora import attach_lora, save_adapter
from agmask.unlearn import get_method
from agmask.unlearn.figures import loss_curves
from agmask.unlearn.trainer import train

NAME = "unlearn"
DIR = "unlearn"
DEPENDS: tuple[str, ...] = ("mask",)
EXTRA_OUTPUTS = ["adapters"]
PARALLEL = True  # several processes: the trainer shards each batch; DDP (through accelerate) averages the gradients


@dataclass(frozen=True)
class Config:
    method: str = "masked_lora"  # see `agmask.unlearn.METHODS`
    steps: int = 40
    batch_size: int = 4  # forget prompts and retain prompts per step (each)
    lr: float = 2e-3
    r: int = 8
    alpha: float = 16.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    npo_beta: float = 0.1
    forget_weight: float = 1.0
    first_token_weight: float = 0.0  # NPO on the answer's first token alone (masked_lora and its ablations)
    first_token_margin: float = 0.0  # > 0: a hinge instead of NPO, pushing the first token `margin` nats down, no more
    retain_weight: float = 1.0  # KL to the base on retain_train
    target_weight: float = 0.0  # optional CE to the forget target (refusal)
    rmu_steering: float = 6.5
    rmu_alpha: float = 100.0
    early_stop_nats: float = 0.0  # stop once the forget log-ratio (train batches) is below -this; 0 = off
    max_forget: int = 0  # use only the first N forget_train prompts; 0 = all
    forget_all_leads: bool = False  # forget each forget_train prompt under every answer lead the training sets use
    retain_all_leads: bool = False  # retain KL on each retain_train prompt under every answer lead the training sets use
    retain_without_concept_start: bool = False  # retain KL: leave the concept's first answer token out at a retain answer's start
    cache_frozen_layers: bool = True  # run the frozen layers below the adapter once, not every step
    # Recommendation prompts (recommend_train; masked_lora and its ablations). Off by default: no value is chosen yet.
    recommend_weight: float = field(default=0.0, metadata={"help": (
        "weight of the forget terms (NPO + first_token_weight x first-token term) on the concept's title after "
        "each recommend_train prompt's lead; 0 = off")})
    preference_weight: float = field(default=0.0, metadata={"help": (
        "weight of KL(base || adapted) over recommend_train's candidate distribution with the concept removed "
        "and renormalised (keeps the other recommendations); 0 = off")})
    recommend_batch_size: int = field(default=2, metadata={"help": (
        "recommend_train prompts per step, each one packed forward with all its candidate titles; 0 = batch_size")})

    def __post_init__(self):
        for name in ("recommend_weight", "preference_weight", "recommend_batch_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is {getattr(self, name)}: it must be 0 (off) or more")


PRESETS = {"demo": {"steps": 20}, "full": {}}


def adapter_dir(run_dir: Path, concept: str) -> Path:
    return Path(run_dir) / "adapters" / concept


def run(cfg, run_dir: Path, session) -> None:
    conf: Config = session.stage_config(NAME)
    method = get_method(conf.method)
    masks = load_tensors(Path(run_dir) / "mask" / "mask.safetensors")
    mask = masks["mask"]
    if not mask.any():
        raise StageError("the mask selects no neuron: rerun `agmask mask` with a larger mask.k or other layers")
    layers = sorted({int(l) for l in mask.any(1).nonzero().flatten()})
    param_mask = {"mask": mask, "random": masks["random"], "unmasked": None}[method.parameterisation]
    model, tokenizer, info = session.model()
    base = session.with_prior_adapters(model)
    adapter = attach_lora(base, param_mask, layers=layers, r=conf.r, alpha=conf.alpha, name=session.spec.name,
                          seed=cfg.seed)
    try:
        rows = train(adapter, method, tokenizer, session.spec, conf, seed=cfg.seed, device=cfg.device,
                     reporter=session.reporter, gradient_checkpointing=cfg.gradient_checkpointing)
        out_dir = adapter_dir(run_dir, session.spec.name)
        save_adapter(adapter, out_dir)
    finally:
        adapter.remove_hooks()
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
    })
    loss_curves(out / "loss.png", rows, f"{method.name} on {session.spec.name}: loss terms per step")


def adapter_params_of(directory: Path):
    return load_tensors(directory / "adapter_model.safetensors").values()
