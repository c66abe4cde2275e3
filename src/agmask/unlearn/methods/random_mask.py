"""Ablation: the same loss as masked_lora with a random mask of the same size in the same layers."""
from agmask.unlearn.methods import Method
from agmask.unlearn.methods.common import prepare

METHOD = Method("random_mask", "random", prepare, "masked_lora's loss, random mask")
