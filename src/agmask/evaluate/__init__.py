"""Stage 7, evaluation: a registry of metrics comparing the base model with the same model + adapter.

Importing this package registers the metrics; the registry order is the run order.
"""
from agmask.evaluate import (metrics_forget, metrics_formats, metrics_utility, metrics_internal,  # noqa: F401
                             metrics_recommend, attacks, relearn, relearn_full, lm_eval_utility)  # (registration)
from agmask.evaluate.attacks import recovered_fraction
from agmask.evaluate.config import PRESETS, EvalConfig
from agmask.evaluate.context import EvalContext
from agmask.evaluate.registry import METRICS, metric
from agmask.evaluate.runner import METRICS_FILE, evaluate_model

__all__ = ["evaluate_model", "EvalConfig", "EvalContext", "PRESETS", "METRICS", "METRICS_FILE", "metric",
           "recovered_fraction"]
