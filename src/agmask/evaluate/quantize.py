"""Weight quantisation of the merged model: the quantisation attacks' mechanics.

A small LoRA delta can vanish when the merged weights are rounded to a coarse grid (int4), bringing
the concept back. `swapped_linears` merges every active adapter's delta into a copy of the Linear
weights in fp32, quantises and dequantises to the original dtype, and puts the exact original tensors
back on exit. Two scopes: `lora` (only the LoRA-wrapped weights: the confined attack, kept as it was)
and `all` (every Linear weight of the model, lm_head included: what a user who quantises the merged
model for a runtime does). Use it with the adapter disabled so the LoRA path is not added twice.

Schemes (all symmetric, round to nearest, dequantised):
  int8 / int4   one scale per output channel (row)
  int4_g128     one scale per row and group of `group` input columns, as GGUF / AWQ-style tools ship
  nf4           bitsandbytes NormalFloat4 (blocks of 64), where bitsandbytes runs on the device
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

Quantizer = Callable[[torch.Tensor], torch.Tensor]  # fp32 (out, in) -> dequantised fp32 (out, in)


class QuantizationUnavailable(Exception):
    """A scheme that cannot run here (e.g. bitsandbytes missing or without a kernel for the device)."""


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


def quantize_groupwise(weight: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Symmetric round-to-nearest with one scale per output row and group of `group` input columns.

    A last group shorter than `group` gets its own scale (zero padding does not change a max).
    """
    w = weight.float()
    out, cols = w.shape
    pad = (-cols) % group
    groups = F.pad(w, (0, pad)).view(out, -1, group)  # (out, G, group)
    return quantize_rtn(groups.reshape(-1, group), bits).view(out, -1)[:, :cols]


def quantize_nf4(weight: torch.Tensor) -> torch.Tensor:
    """bitsandbytes NF4 (blocksize 64) quantise + dequantise, on the weight's device."""
    try:
        import bitsandbytes.functional as bnbf
    except Exception as e:  # ImportError, or a broken native library
        raise QuantizationUnavailable(f"bitsandbytes is not installed or does not load ({type(e).__name__}: "
                                      f"{str(e).splitlines()[0] if str(e) else ''})") from e
    try:
        packed, state = bnbf.quantize_4bit(weight.float().contiguous(), quant_type="nf4", blocksize=64)
        return bnbf.dequantize_4bit(packed, state).float().view_as(weight)
    except Exception as e:
        raise QuantizationUnavailable(f"bitsandbytes NF4 does not run on this device ({weight.device.type}): "
                                      f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


def quantizer_for(scheme: str, group: int = 128, device: torch.device | str = "cpu") -> Quantizer:
    """The quantiser of a scheme name; raises QuantizationUnavailable (checked on a small matrix) before
    any model weight is touched."""
    if scheme.startswith("int") and "_g" in scheme:
        bits = int(scheme[3 : scheme.index("_g")])
        return lambda w: quantize_groupwise(w, bits, group)
    if scheme.startswith("int"):
        bits = int(scheme[3:])
        return lambda w: quantize_rtn(w, bits)
    if scheme == "nf4":
        quantize_nf4(torch.randn(8, 64, device=device))  # probe: fails here, not halfway through the model
        return quantize_nf4
    raise ValueError(f"unknown quantisation scheme {scheme!r}")


def lora_layers(model: nn.Module) -> list[nn.Module]:
    """The PEFT LoRA-wrapped modules (each has a `base_layer` Linear and `get_delta_weight`)."""
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def linear_targets(model: nn.Module, scope: Literal["lora", "all"]) -> list[tuple[nn.Parameter, nn.Module | None]]:
    """(weight, its LoRA layer or None) for every weight in scope; a weight shared by two modules (tied) once.

    `all`: every nn.Linear except the adapters' own lora_A / lora_B matrices.
    """
    wrapped = {id(layer.get_base_layer()): layer for layer in lora_layers(model)}
    if scope == "lora":
        return [(layer.get_base_layer().weight, layer) for layer in wrapped.values()]
    internal = {id(m) for layer in wrapped.values() for d in (layer.lora_A, layer.lora_B) for m in d.values()}
    out, seen = [], set()
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module) not in internal and id(module.weight) not in seen:
            seen.add(id(module.weight))
            out.append((module.weight, wrapped.get(id(module))))
    return out


@contextmanager
def swapped_linears(model: nn.Module, quantize: Quantizer | None, merged: bool,
                    scope: Literal["lora", "all"] = "lora") -> Iterator[dict]:
    """Inside the block, each weight W in scope is Q(W + delta) (merged, delta = the sum of the active
    adapters' deltas where W is LoRA-wrapped) or Q(W). quantize None = no quantisation (the fp32 merge).

    Yields {"weights": how many were swapped, "max_abs_error": the largest |change| of an element relative
    to the unquantised target}. The original tensors are put back in `finally`, bit for bit.
    """
    saved: list[tuple[nn.Parameter, torch.Tensor]] = []
    stats = {"weights": 0, "max_abs_error": 0.0}
    try:
        with torch.no_grad():
            swaps = list(_swaps(model, quantize, merged, scope, stats))
        for param, new in swaps:
            saved.append((param, param.data))
            param.data = new
        yield stats
    finally:
        for param, original in saved:
            param.data = original


def _swaps(model: nn.Module, quantize: Quantizer | None, merged: bool, scope: str, stats: dict):
    """(weight, its replacement) for every weight in scope; counts and the largest error go into `stats`."""
    for param, layer in linear_targets(model, scope):
        target = param.data.float()  # (out, in)
        if merged and layer is not None:
            for name in layer.active_adapters:
                if name in layer.lora_A:
                    target = target + layer.get_delta_weight(name).float()
        new = quantize(target) if quantize else target
        stats["max_abs_error"] = max(stats["max_abs_error"], float((new - target).abs().max()))
        stats["weights"] += 1
        yield param, new.to(param.dtype)


@contextmanager
def swapped_weights(model: nn.Module, bits: int | None, merged: bool) -> Iterator[float]:
    """The confined attack's swap: only the LoRA-wrapped weights, per-channel RTN at `bits` (None = merge
    only). Yields the largest |change| of any weight element relative to the unquantised target."""
    with swapped_linears(model, (lambda w: quantize_rtn(w, bits)) if bits else None, merged, "lora") as stats:
        yield stats["max_abs_error"]
