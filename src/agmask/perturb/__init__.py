"""Prompt perturbation: generators (families), stability metrics and figures for the `perturb` stage."""
from agmask.perturb.families import FAMILIES, LANGUAGE_PREFIX, ORIGINAL, Variant, build_variants, family_rng
from agmask.perturb.metrics import answer_stats, extract_answer, group_stats, normalise, stability

__all__ = ["FAMILIES", "LANGUAGE_PREFIX", "ORIGINAL", "Variant", "build_variants", "family_rng", "answer_stats",
           "extract_answer", "group_stats", "normalise", "stability"]
