"""Capture activations by canonical name; hooks live only inside the `capture` context manager.

Names (TransformerLens style):
  blocks.{i}.mlp.hook_post   the MLP neuron activation = input of down_proj, (B, T, intermediate)
  blocks.{i}.hook_resid_post the residual stream after decoder layer i, (B, T, hidden)

A neuron is (layer i, unit j) of `blocks.{i}.mlp.hook_post`; scores and masks are built only from it.
With `keep_grad=True` the captured tensors stay in the graph and get `.retain_grad()`, so after one
backward `cache[name].grad` holds d(loss)/d(activation) (attribution). The base model is frozen, so
nothing upstream needs a gradient: the first hooked activation (in forward order) becomes a leaf that
requires grad, and the graph, and the backward, start there, not at the embeddings. Every later
activation depends on it, so their gradients are the full ones. Otherwise tensors are detached.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
import torch.nn as nn

from agmask.errors import StageError
from agmask.models.arch import decoder_layers, mlp_module, num_layers


def mlp_hook_name(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_post"


def resid_hook_name(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def hook_names(model: nn.Module, kinds: Iterable[str] = ("mlp", "resid"), layers: Iterable[int] | None = None) -> list[str]:
    layers = range(num_layers(model)) if layers is None else list(layers)
    n = num_layers(model)
    bad = [i for i in layers if not 0 <= i < n]
    if bad:
        raise StageError(f"unknown layer(s) {bad}: the model has layers 0..{n - 1}")
    builders = {"mlp": mlp_hook_name, "resid": resid_hook_name}
    return [builders[k](i) for i in layers for k in kinds]


def _parse(name: str) -> tuple[int, str]:
    parts = name.split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
        raise StageError(f"unknown hook name {name!r} (expected blocks.N.mlp.hook_post or blocks.N.hook_resid_post)")
    kind = ".".join(parts[2:])
    if kind not in ("mlp.hook_post", "hook_resid_post"):
        raise StageError(f"unknown hook name {name!r} (expected blocks.N.mlp.hook_post or blocks.N.hook_resid_post)")
    return int(parts[1]), kind


@contextmanager
def capture(model: nn.Module, names: Iterable[str], keep_grad: bool = False,
            reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Yield a dict that fills with activations during forward passes run inside the block.

    `reduce` maps each captured (B, T, D) tensor to what is stored (e.g. a gather of some positions),
    so big activations never pile up in memory. Hooks are removed in `finally`, even on error.
    """
    names = list(names)
    cache: dict[str, torch.Tensor] = {}
    handles = []
    n = num_layers(model)
    try:
        for name in names:
            layer, kind = _parse(name)
            if not 0 <= layer < n:
                raise StageError(f"unknown layer {layer} in {name!r}: the model has layers 0..{n - 1}")
            if kind == "mlp.hook_post":
                def pre_hook(module, args, _name=name):
                    act = _grad_root(args[0], keep_grad)  # (B, T, intermediate): act_fn(gate(x)) * up(x)
                    _store(cache, _name, act, keep_grad, reduce)
                    return (act, *args[1:])
                handles.append(mlp_module(model, layer, "down").register_forward_pre_hook(pre_hook))
            else:
                def post_hook(module, args, output, _name=name):
                    hidden = _grad_root(output[0] if isinstance(output, tuple) else output, keep_grad)  # (B, T, hidden)
                    _store(cache, _name, hidden, keep_grad, reduce)
                    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
                handles.append(decoder_layers(model)[layer].register_forward_hook(post_hook))
        yield cache
    finally:
        for h in handles:
            h.remove()


def _grad_root(tensor: torch.Tensor, keep_grad: bool) -> torch.Tensor:
    """Make the first captured tensor a grad-requiring leaf when nothing upstream requires grad."""
    if keep_grad and torch.is_grad_enabled() and not tensor.requires_grad:
        return tensor.detach().requires_grad_(True)
    return tensor


def _store(cache, name, tensor, keep_grad, reduce) -> None:
    if keep_grad:
        if tensor.requires_grad:
            tensor.retain_grad()
        cache[name] = tensor
    else:
        value = tensor.detach()
        cache[name] = reduce(value) if reduce else value
