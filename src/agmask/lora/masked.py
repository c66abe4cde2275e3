"""A standard PEFT LoRA on gate_proj / up_proj / down_proj whose update touches only masked neurons.

Index space: a neuron (layer i, unit j) is row j of gate_proj / up_proj's output and column j of
down_proj's input. PEFT shapes: lora_A is (r, in), lora_B is (out, r); delta W = B @ A * scaling.
  gate/up:  rows of lora_B outside the mask are zero (zero at init; gradient-masked) -> delta rows = 0
  down:     columns of lora_A outside the mask are zeroed at init and gradient-masked -> delta cols = 0
AdamW keeps a zero parameter with zero gradient at exactly zero (its moments stay 0; decoupled weight
decay multiplies it), and clipping only rescales gradients, so the delta stays zero outside the mask.
Gradient hooks live on the parameter tensors and do not survive save/load: `load_adapter(...,
trainable=True)` re-registers them. Hooks never outlive their use: `with masked_lora(...) as adapter`
(or `with attach_lora(...)`, `with load_adapter(..., trainable=True)`, `with gradient_masks(...)`)
removes them on exit, also after an exception. `save_adapter` refuses to write an adapter whose merged
delta is not exactly zero outside its mask.
"""
from __future__ import annotations

import contextlib
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn
from peft import LoraConfig, PeftModel, get_peft_model

from agmask.errors import StageError
from agmask.files import atomic_dir, read_json, save_tensors, write_json
from agmask.masking import layers_of
from agmask.models.arch import arch_spec, base_causal_lm, mlp_module, mlp_module_names

MASK_FILE = "mask.safetensors"
WHICH = ("gate", "up", "down")


@contextlib.contextmanager
def _quiet_peft():
    """PEFT reads the deprecated `is_gradient_checkpointing` (transformers 5 warns on every wrap)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


@dataclass
class MaskedAdapter:
    """A PEFT model plus the mask and gradient hooks of one named adapter."""

    model: PeftModel
    name: str
    mask: torch.Tensor | None  # (L, I) bool; None = unmasked LoRA
    layers: list[int]
    handles: list = field(default_factory=list)

    def remove_hooks(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def __enter__(self) -> "MaskedAdapter":
        return self

    def __exit__(self, *exc) -> None:
        self.remove_hooks()


def _lora_pair(model: nn.Module, layer: int, which: str, name: str) -> tuple[nn.Parameter, nn.Parameter]:
    module = mlp_module(model, layer, which)
    return module.lora_A[name].weight, module.lora_B[name].weight  # (r, in), (out, r)


def apply_gradient_masks(model: nn.Module, name: str, mask: torch.Tensor, layers: list[int]) -> list:
    """Zero out-of-mask LoRA entries and register gradient masks; returns the hook handles."""
    handles = []
    for layer in layers:
        keep = mask[layer]  # (I,) bool
        for which in WHICH:
            a, b = _lora_pair(model, layer, which, name)
            if which == "down":
                m = keep.to(a.dtype).to(a.device)[None, :]  # (1, I): columns of lora_A (r, I)
                target = a
            else:
                m = keep.to(b.dtype).to(b.device)[:, None]  # (I, 1): rows of lora_B (I, r)
                target = b
            with torch.no_grad():
                target.mul_(m)
            keep_entries = m.bool()
            # torch.where, not g * m: a NaN or inf gradient outside the mask must not leak in (NaN * 0 = NaN)
            handles.append(target.register_hook(lambda g, _k=keep_entries: torch.where(_k, g, 0.0)))
    return handles


@contextlib.contextmanager
def gradient_masks(model: nn.Module, name: str, mask: torch.Tensor | None, layers: list[int]) -> Iterator[list]:
    """The gradient masks of adapter `name` registered for the block, removed on exit (no mask: nothing)."""
    handles = apply_gradient_masks(model, name, mask, layers) if mask is not None else []
    try:
        yield handles
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def masked_lora(model: nn.Module, mask: torch.Tensor | None, layers: list[int] | None = None, r: int = 8,
                alpha: float = 16.0, name: str = "default", seed: int = 0) -> Iterator["MaskedAdapter"]:
    """`attach_lora` for the block: the gradient masks are removed on exit, also after an exception. The
    LoRA layers stay (unload them with `adapter.model.unload()` or `Session.drop_adapters`)."""
    adapter = attach_lora(model, mask, layers=layers, r=r, alpha=alpha, name=name, seed=seed)
    with adapter:
        yield adapter


def attach_lora(model: nn.Module, mask: torch.Tensor | None, layers: list[int] | None = None, r: int = 8,
                alpha: float = 16.0, name: str = "default", seed: int = 0) -> MaskedAdapter:
    """Add a LoRA adapter on the MLP projections of `layers` (default: layers the mask touches).

    `model` may be a plain CausalLM or a PeftModel that already holds earlier adapters (incremental
    mode); earlier adapters stay active and frozen, only the new one trains.
    """
    arch_spec(base_causal_lm(model))
    if layers is None:
        if mask is None:
            raise StageError("an unmasked LoRA needs explicit layers")
        layers = layers_of(mask)
        if not layers:
            raise StageError("the mask selects no neuron, so there is no layer to adapt; pass layers explicitly "
                             "for an identity adapter")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, bias="none", init_lora_weights=True, use_dora=False,
                        target_modules=mlp_module_names(model, layers), task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # lora_A's kaiming init, reproducible, no global RNG side effect
        if isinstance(model, PeftModel):
            previous = [n for n in model.peft_config]
            model.add_adapter(name, config)
            model.base_model.set_adapter(previous + [name])  # all active: their deltas add up
            peft_model = model
        else:
            with _quiet_peft():
                peft_model = get_peft_model(model, config, adapter_name=name)
    freeze_all_but(peft_model, name)
    handles = apply_gradient_masks(peft_model, name, mask, layers) if mask is not None else []
    return MaskedAdapter(peft_model, name, mask, list(layers), handles)


def freeze_all_but(peft_model: PeftModel, name: str) -> None:
    """Only the named adapter's LoRA weights train; base and earlier adapters are frozen explicitly."""
    for pname, p in peft_model.named_parameters():
        p.requires_grad_(f".{name}." in pname and "lora_" in pname)


def trainable_parameters(adapter: MaskedAdapter) -> list[nn.Parameter]:
    return [p for p in adapter.model.parameters() if p.requires_grad]


def merged_delta(model: nn.Module, layer: int, which: str, name: str = "default") -> torch.Tensor:
    """delta W = B @ A * scaling of one projection, (out, in)."""
    module = mlp_module(model, layer, which)
    a, b = module.lora_A[name].weight, module.lora_B[name].weight
    return (b @ a) * module.scaling[name]


def delta_outside_mask(adapter: MaskedAdapter) -> float:
    """The largest |merged delta| outside the mask over every adapted projection (0.0 for a masked adapter
    trained as it should be; 0.0 for an unmasked one by definition)."""
    if adapter.mask is None:
        return 0.0
    worst = 0.0
    with torch.no_grad():
        for layer in adapter.layers:
            outside = ~adapter.mask[layer].to(torch.bool)
            for which in WHICH:
                delta = merged_delta(adapter.model, layer, which, adapter.name)  # (out, in)
                part = delta[:, outside.to(delta.device)] if which == "down" else delta[outside.to(delta.device)]
                if part.numel():
                    worst = max(worst, float(part.abs().max()))
    return worst


def save_adapter(adapter: MaskedAdapter, out_dir: Path) -> Path:
    """Write a standard PEFT adapter dir (adapter_config.json, adapter_model.safetensors) + mask.safetensors.

    Refuses (StageError) when the merged delta is not exactly zero outside the mask. adapter_config.json
    lists target_modules sorted, so the same adapter always has the same files and hashes."""
    out_dir = Path(out_dir)
    leak = delta_outside_mask(adapter)
    if leak != 0.0:
        raise StageError(f"refusing to save adapter {adapter.name}: its merged delta outside the mask is {leak:.3g}, "
                         "not 0 (were its gradient masks removed before training?)")
    with atomic_dir(out_dir) as tmp:
        adapter.model.save_pretrained(str(tmp / "peft"), selected_adapters=[adapter.name])
        src = tmp / "peft" if adapter.name == "default" else tmp / "peft" / adapter.name
        for f in src.iterdir():
            if f.is_file():
                shutil.move(str(f), tmp / f.name)
        shutil.rmtree(tmp / "peft")
        config = read_json(tmp / "adapter_config.json")
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])  # PEFT writes a set, in any order
        write_json(tmp / "adapter_config.json", config)
        mask = adapter.mask if adapter.mask is not None else torch.zeros(0, dtype=torch.bool)
        save_tensors(tmp / MASK_FILE, {"mask": mask}, metadata={"layers": ",".join(map(str, adapter.layers)),
                                                               "masked": str(adapter.mask is not None)})
    return out_dir


def _saved_mask(adapter_dir: Path) -> tuple[torch.Tensor | None, list[int]]:
    """(mask or None for an unmasked adapter, adapted layers) from the adapter's mask.safetensors."""
    from safetensors import safe_open

    path = adapter_dir / MASK_FILE
    if not path.is_file():
        raise StageError(f"{path} is missing, so the adapter's mask is unknown (it would load unmasked): rerun "
                         "`agmask unlearn --force`")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            saved = f.get_tensor("mask")
    except Exception as e:  # SafetensorError: truncated or edited
        raise StageError(f"{path} is damaged ({str(e).splitlines()[0]}): rerun `agmask unlearn --force`") from None
    layers = [int(x) for x in meta.get("layers", "").split(",") if x.strip()]
    return (saved if saved.numel() else None), layers


def load_adapter(model: nn.Module, adapter_dir: Path, name: str | None = None, trainable: bool = False) -> MaskedAdapter:
    """Load an adapter saved by `save_adapter` onto `model` (a CausalLM or a PeftModel with others).

    With `trainable=True` (relearning attack, further training) the gradient masks are re-registered: use
    the result as a context manager (`with load_adapter(..., trainable=True) as adapter:`) to remove them.
    """
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise StageError(f"{adapter_dir} holds no PEFT adapter (adapter_config.json missing); run `agmask unlearn`")
    name = name or "default"
    mask, layers = _saved_mask(adapter_dir)  # layers from the mask file: target_modules may be a regex string
    if mask is not None and not layers:
        layers = layers_of(mask)
    if isinstance(model, PeftModel):
        model.load_adapter(str(adapter_dir), adapter_name=name, is_trainable=trainable)
        model.base_model.set_adapter(list(model.peft_config))
        peft_model = model
    else:
        with _quiet_peft():
            peft_model = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=name, is_trainable=trainable)
    if trainable:
        freeze_all_but(peft_model, name)
    else:
        for p in peft_model.parameters():
            p.requires_grad_(False)
    handles = apply_gradient_masks(peft_model, name, mask, layers) if (trainable and mask is not None) else []
    return MaskedAdapter(peft_model, name, mask, layers, handles)
