"""Activation (gradient) checkpointing for training: recompute each decoder layer in the backward.

Training only. Attribution needs the exact activation gradients of captured tensors, and a
checkpointed layer recomputes its activations (its hooks fire twice, the captured tensor is not the
one in the graph), so `neuron_stats` refuses to run while it is on (`is_active`).

transformers checkpoints a decoder layer only when that layer is in training mode; the trainer keeps
the model in eval mode (no dropout), so the context marks the decoder layers alone as training (their
attention and MLP submodules stay in eval mode) and restores everything on exit. Non-reentrant
checkpointing needs no gradient on the embeddings, so the backward still starts at the first adapted
layer.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch.nn as nn

from agmask.errors import ModelError
from agmask.models.arch import base_causal_lm, decoder_layers


@contextmanager
def activation_checkpointing(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Inside the block, forward passes that need gradients store only each decoder layer's input."""
    if not enabled:
        yield
        return
    base = base_causal_lm(model)
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ModelError(f"{type(base).__name__} does not support gradient checkpointing; run without it")
    layers = list(decoder_layers(model))
    modes = [layer.training for layer in layers]
    base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    base.disable_input_require_grads()  # non-reentrant: the embeddings need no gradient
    for layer in layers:
        layer.training = True  # only the layer itself: its submodules keep their mode (no dropout)
    try:
        yield
    finally:
        base.activation_checkpointing_disable()
        for layer, mode in zip(layers, modes):
            layer.training = mode


def is_active(model: nn.Module) -> bool:
    """Whether a forward pass with gradients would checkpoint some decoder layer."""
    try:
        layers = decoder_layers(model)
    except (ModelError, AttributeError):
        return False
    return any(getattr(layer, "gradient_checkpointing", False) and layer.training for layer in layers)
