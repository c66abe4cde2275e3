"""Masked LoRA on top of PEFT: the merged update is exactly zero outside a neuron mask."""
from agmask.lora.masked import (
    MaskedAdapter,
    apply_gradient_masks,
    attach_lora,
    delta_outside_mask,
    freeze_all_but,
    gradient_masks,
    load_adapter,
    masked_lora,
    merged_delta,
    save_adapter,
    trainable_parameters,
)

__all__ = ["MaskedAdapter", "masked_lora", "attach_lora", "gradient_masks", "apply_gradient_masks", "freeze_all_but",
           "load_adapter", "save_adapter", "merged_delta", "delta_outside_mask", "trainable_parameters"]
