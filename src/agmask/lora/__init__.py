"""Masked LoRA on top of PEFT: the merged update is exactly zero outside a neuron mask."""
from agmask.lora.masked import (
    MaskedAdapter,
    apply_gradient_masks,
    attach_lora,
    freeze_all_but,
    load_adapter,
    merged_delta,
    save_adapter,
    trainable_parameters,
)

__all__ = ["MaskedAdapter", "attach_lora", "apply_gradient_masks", "freeze_all_but", "load_adapter", "save_adapter", "merged_delta", "trainable_parameters"]
