"""Run configuration: the options shared by every stage, plus each stage's own resolved config.

Each stage module defines a `Config` dataclass and `PRESETS = {"demo": {...}, "full": {...}}`;
the resolved stage config is `Config(**PRESETS[budget], **overrides)`. Its JSON is part of that
stage's input hash, so editing one stage's options reruns that stage and its dependants only.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agmask.errors import AgmaskError
from agmask.models.registry import DEFAULT_MODEL

Budget = Literal["demo", "full"]


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="model spec (see `agmask models`)")
    concepts: list[str] = Field(default_factory=lambda: ["inception"], description="shipped names or YAML paths")
    run_dir: Path = Field(Path("runs/default"), description="where every artefact goes")
    seed: int = 0
    device: str = Field("cpu", description="cpu, cuda, cuda:N, or auto (device_map over all GPUs)")
    dtype: str | None = Field(None, description="float32 (CPU default) or bfloat16 (CUDA default)")
    budget: Budget = "demo"
    gradient_checkpointing: bool = Field(False, description="recompute decoder layers in training's backward "
                                         "(less memory, same loss); never used by attribution")
    force: bool = False
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-stage option overrides")

    @field_validator("concepts")
    @classmethod
    def _some_concept(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one --concept is needed")
        return v

    def core(self) -> dict:
        """The options every stage's result depends on (device and gradient checkpointing excluded: they
        change speed and memory, not meaning)."""
        return {"model": self.model, "seed": self.seed, "dtype": self.dtype, "budget": self.budget}


def resolve_stage_config(stage_module, cfg: RunConfig):
    """Build a stage's Config from its budget preset and the user's overrides; unknown keys are errors."""
    config_cls = getattr(stage_module, "Config", None)
    if config_cls is None:
        return None
    name = stage_module.NAME
    values = dict(getattr(stage_module, "PRESETS", {}).get(cfg.budget, {}))
    overrides = cfg.overrides.get(name, {})
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise AgmaskError(f"unknown option(s) for stage {name}: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    values.update({key: _checked(name, key, fields[key].type, value) for key, value in overrides.items()})
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as e:
        raise AgmaskError(f"bad option for stage {name}: {e}") from e


def _checked(stage: str, option: str, annotation, value):
    """`value` for a scalar option (bool, int, float, str; float may be optional), checked against its
    type; other annotations pass through to the stage Config. A float option also takes an int and a
    number written as text (YAML reads `1e-3` as text)."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    optional = kind.replace(" ", "").endswith("|None")
    kind = kind.replace(" ", "").removesuffix("|None")
    if optional and value is None:
        return value
    if kind == "float" and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    ok = {"bool": lambda v: isinstance(v, bool), "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "str": lambda v: isinstance(v, str)}.get(kind)
    if ok is not None and not ok(value):
        wanted = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "text"}[kind]
        raise AgmaskError(f"bad option for stage {stage}: {option} must be {wanted}, got {value!r}")
    return value


def config_json(obj) -> str:
    if obj is None:
        return "null"
    data = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    return json.dumps(data, sort_keys=True, default=str)
