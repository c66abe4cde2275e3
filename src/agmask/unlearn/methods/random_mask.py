"""Ablation: the same loss as masked_lora with a random mask of the same size in the same layers."""
from agmask.unlearn.methods import Method
from agmask.unlearn.methods.common import NEEDS, forget_and_retain

METHOD = Method("random_mask", "random", forget_and_retain, NEEDS, "masked_lora's loss, random mask")
