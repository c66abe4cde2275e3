"""Round-to-nearest weight quantisation of the merged adapter: the quantisation attack's mechanics.

A small LoRA delta can vanish when the merged weights are rounded to a coarse grid (int4), bringing
the concept back. `swapped_weights` merges the adapter into a copy of only the LoRA-wrapped Linear
weights, quantises per output channel and dequantises to the original dtype, and restores the exact
original tensors on exit. Use it with the adapter disabled so the LoRA path is not added twice.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn


def quantize_rtn(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel round-to-nearest: (out, in) -> dequantised fp32 (out, in).

    scale_o = max_i |W_oi| / (2^(bits-1) - 1); q = clamp(round(W / scale), -2^(bits-1), 2^(bits-1) - 1).
    Every element moves by at most scale_o / 2.
    """
    qmax = 2 ** (bits - 1) - 1
    w = weight.float()
    scale = w.abs().amax(dim=1, keepdim=True) / qmax  # (out, 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays zero
    return torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale


def lora_layers(model: nn.Module) -> list[nn.Module]:
    """The PEFT LoRA-wrapped modules (each has a `base_layer` Linear and `get_delta_weight`)."""
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


@contextmanager
def swapped_weights(model: nn.Module, bits: int | None, merged: bool) -> Iterator[float]:
    """Inside the block, each LoRA-wrapped base weight W is replaced by Q(W + delta) (merged) or Q(W).

    bits None = no quantisation (the fp32 merge alone). Yields the largest |change| of any weight
    element relative to the unquantised target, for a sanity check. Restored in `finally`.
    """
    saved: list[tuple[nn.Parameter, torch.Tensor]] = []
    max_err = 0.0
    try:
        for layer in lora_layers(model):
            param = layer.get_base_layer().weight
            target = param.data.float()  # (out, in)
            if merged:
                for name in layer.active_adapters:
                    if name in layer.lora_A:
                        target = target + layer.get_delta_weight(name).float()
            new = quantize_rtn(target, bits) if bits else target
            max_err = max(max_err, float((new - target).abs().max()))
            saved.append((param, param.data))
            param.data = new.to(param.dtype)
        yield max_err
    finally:
        for param, original in saved:
            param.data = original
