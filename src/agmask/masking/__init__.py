"""Scores -> a boolean neuron mask of shape (num_layers, intermediate_size)."""
from agmask.masking.select import (choose_layers, full_layer_mask, layers_of, mask_from_scores, random_layers_mask,
                                   random_mask_like)

__all__ = ["choose_layers", "mask_from_scores", "random_mask_like", "random_layers_mask", "full_layer_mask",
           "layers_of"]
