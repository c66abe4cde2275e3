"""Neuron attribution: per-sample gradients of the answer loss w.r.t. every MLP neuron, one backward per batch."""
from agmask.attribution.gradients import NeuronStats, neuron_stats
from agmask.attribution.positions import POSITIONS
from agmask.attribution.registry import SCORES
from agmask.attribution.ranking import (combined_score, contrastive, layer_rankings, rank_normalise, score_tensors,
                                       top_neurons)

__all__ = ["NeuronStats", "neuron_stats", "POSITIONS", "SCORES", "combined_score", "contrastive", "rank_normalise",
           "top_neurons", "score_tensors", "layer_rankings"]
