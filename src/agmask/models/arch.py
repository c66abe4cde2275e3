"""Per-architecture module table: where the decoder layers and the MLP projections live.

A neuron is (layer i, unit j) of the MLP's intermediate activation, i.e. the input of `down_proj`
(`act_fn(gate_proj(x)) * up_proj(x)` in Llama/Qwen). Everything that touches neurons goes through
this table, so a new architecture is one entry here.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch.nn as nn

from agmask.errors import ModelError


@dataclass(frozen=True)
class ArchSpec:
    layers: str  # attribute path from the CausalLM to the ModuleList of decoder layers
    mlp: str  # attribute of a decoder layer holding the MLP
    gate: str
    up: str
    down: str  # its input is the neuron activation, shape (B, T, intermediate)


_LLAMA_LIKE = ArchSpec(layers="model.layers", mlp="mlp", gate="gate_proj", up="up_proj", down="down_proj")

ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "phi3": None,  # fused gate_up_proj: not supported yet (listed so the error says so)
}


def arch_spec(model: nn.Module) -> ArchSpec:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    spec = ARCHITECTURES.get(model_type)
    if spec is None:
        supported = ", ".join(k for k, v in ARCHITECTURES.items() if v is not None)
        raise ModelError(f"architecture {model_type!r} is not supported (supported: {supported})")
    return spec


def _get(obj: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def base_causal_lm(model: nn.Module) -> nn.Module:
    """Unwrap a PEFT model to the underlying transformers CausalLM."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    base = base_causal_lm(model)
    return _get(base, arch_spec(base).layers)


def mlp_module(model: nn.Module, layer: int, which: str) -> nn.Module:
    """`which` is one of gate, up, down."""
    base = base_causal_lm(model)
    spec = arch_spec(base)
    mlp = getattr(decoder_layers(base)[layer], spec.mlp)
    return getattr(mlp, getattr(spec, which))


def mlp_module_names(model: nn.Module, layers: list[int], which: tuple[str, ...] = ("gate", "up", "down")) -> list[str]:
    """Fully qualified module names (relative to the CausalLM) for PEFT `target_modules`."""
    base = base_causal_lm(model)
    spec = arch_spec(base)
    return [f"{spec.layers}.{i}.{spec.mlp}.{getattr(spec, w)}" for i in layers for w in which]


class _GivenOutput(nn.Module):
    """Stands in for a skipped decoder layer: passes the hidden states through unchanged."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


@contextmanager
def skip_layers(model: nn.Module, count: int) -> Iterator[None]:
    """Inside the block, decoder layers 0..count-1 are identities (their output is fed as inputs_embeds).

    Layer indices are kept, so hooks and per-layer masks on the later layers still line up. Refuses
    models whose layers differ in attention type (the mask of a skipped layer is looked up by index).
    """
    layers = decoder_layers(model)
    types = getattr(base_causal_lm(model).config, "layer_types", None) or []
    if len(set(types)) > 1:
        raise ModelError("skip_layers needs layers of one attention type (this model mixes them)")
    originals = [layers[i] for i in range(count)]
    try:
        for i in range(count):
            layers[i] = _GivenOutput()
        yield
    finally:
        for i, layer in enumerate(originals):
            layers[i] = layer


def num_layers(model: nn.Module) -> int:
    return base_causal_lm(model).config.num_hidden_layers


def intermediate_size(model: nn.Module) -> int:
    return base_causal_lm(model).config.intermediate_size
