"""Ablation: the same loss as masked_lora on a plain LoRA over the same layers (no neuron mask)."""
from agmask.unlearn.methods import Method
from agmask.unlearn.methods.common import prepare

METHOD = Method("unmasked_lora", "unmasked", prepare, "masked_lora's loss, no mask")
