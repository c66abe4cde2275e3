"""The method registry: a method is its data and loss (`prepare` -> `Plan`) plus the parameterisation it trains.

`prepare(setup)` builds the method's sources (examples + references) and returns them with the loss
(see `agmask.unlearn.sources`); the trainer runs any method the same way.

Parameterisations (all LoRA on the same targets and rank):
  mask        the attribution mask (AG-Masked-LoRA)
  random      a random mask of the same size in the same layers
  unmasked    plain LoRA on the mask's layers
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from agmask.errors import StageError

PARAMETERISATIONS = ("mask", "random", "unmasked")


@dataclass(frozen=True)
class Method:
    name: str
    parameterisation: str
    prepare: Callable  # (sources.Setup) -> sources.Plan: the sources it draws every step and its loss
    description: str


_MODULES = ["masked_lora", "masked_refusal", "unmasked_lora", "random_mask", "ga", "npo", "rmu"]
METHODS: dict[str, Method] = {}
for _name in _MODULES:
    _m = importlib.import_module(f"agmask.unlearn.methods.{_name}").METHOD
    METHODS[_m.name] = _m


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise StageError(f"unknown unlearning method {name!r} (choose {', '.join(METHODS)})")
    return METHODS[name]
