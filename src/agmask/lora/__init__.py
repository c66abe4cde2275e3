"""Masked LoRA on top of PEFT: the merged update is exactly zero outside a neuron mask."""
from agmask.lora.masked import (
    MaskedAdapter,
    attach_lora,
    load_adapter,
    merged_delta,
    save_adapter,
    trainable_parameters,
)

__all__ = ["MaskedAdapter", "attach_lora", "load_adapter", "save_adapter", "merged_delta", "trainable_parameters"]
