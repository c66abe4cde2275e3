"""Ablation: the same loss as masked_lora on a plain LoRA over the same layers (no neuron mask)."""
from agmask.unlearn.methods import Method
from agmask.unlearn.methods.common import NEEDS, forget_and_retain

METHOD = Method("unmasked_lora", "unmasked", forget_and_retain, NEEDS, "masked_lora's loss, no mask")
