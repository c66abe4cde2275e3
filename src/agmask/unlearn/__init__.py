"""Unlearning: methods are (loss, parameterisation) pairs; one trainer runs them all."""
from agmask.unlearn.methods import METHODS, Method, get_method

__all__ = ["METHODS", "Method", "get_method"]
