"""Run configuration: the options shared by every stage, plus each stage's own options.

Each stage module defines `Config`, decorated with `@stage_options` (a frozen pydantic dataclass that
refuses unknown keys and validates types, lists, literals and ranges), and `PRESETS = {"demo": {...},
"full": {...}}`. Fields keep the plain dataclass style, `name: type = field(default=..., metadata={"help":
...})`, so `dataclasses.asdict`, `replace` and `fields` work on them. The resolved stage config is
`Config(**PRESETS[budget], **overrides)`; its JSON is part of that stage's input hash, so editing one
stage's options reruns that stage and its dependants only. `validate_options` checks every override of
every stage in one place, before any stage runs.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic.dataclasses
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agmask.errors import AgmaskError
from agmask.models.registry import DEFAULT_MODEL

Budget = Literal["demo", "full"]
DTYPES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16")

# Constrained types for stage options (pydantic reads the bounds; `agmask STAGE --help` shows them).
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


def _reject_bool_for_numbers(cls, value, info):
    """pydantic's lax mode reads `true` as 1 for an int option; an option that is not a bool refuses it."""
    if isinstance(value, bool):
        annotation = cls.__pydantic_fields__[info.field_name].annotation
        if not (annotation is bool or bool in typing.get_args(annotation)):
            raise ValueError("got true/false")
    return value


def stage_options(cls):
    """Class decorator for a stage's `Config`: a frozen pydantic dataclass, unknown keys refused, values
    validated (a number written as text, e.g. YAML's `1e-3`, is accepted for a float; a list for a tuple)."""
    cls._reject_bool_for_numbers = field_validator("*", mode="before")(classmethod(_reject_bool_for_numbers))
    return pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid"))(cls)


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="model spec (see `agmask models`)")
    concepts: list[str] = Field(default_factory=lambda: ["inception"], description="shipped names or YAML paths")
    run_dir: Path = Field(Path("runs/default"), description="where every artefact goes")
    seed: int = 0
    device: str = Field("cpu", description="cpu, cuda, cuda:N, or auto (device_map over all GPUs)")
    dtype: Literal[DTYPES] | None = Field(None, description="float32 (CPU default) or bfloat16 (CUDA default)")
    budget: Budget = "demo"
    gradient_checkpointing: bool = Field(False, description="recompute decoder layers in training's backward "
                                         "(less memory, same loss); never used by attribution")
    force: bool = False
    recipe: Literal["auto", "defaults"] = Field("auto", description="auto: apply tune/choice.json (when current) "
                                                "under the --set options; defaults: ignore it")
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-stage option overrides")
    command: str | None = Field(None, description="the invocation recorded with the results: the agmask argv "
                                "(set by the CLI); None = the Python call, filled in by run_pipeline")

    @field_validator("concepts")
    @classmethod
    def _some_concept(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one --concept is needed")
        return v

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        kind, _, index = v.partition(":")
        if v in ("cpu", "cuda", "auto") or (kind == "cuda" and index.isdigit()):
            return v
        raise ValueError(f"unknown device {v!r}: use cpu, cuda, cuda:N or auto")

    def core(self) -> dict:
        """The options every stage's result depends on (device and gradient checkpointing excluded: they
        change speed and memory, not meaning)."""
        return {"model": self.model, "seed": self.seed, "dtype": self.dtype, "budget": self.budget}


def make_run_config(**kwargs) -> RunConfig:
    """RunConfig(**kwargs), with a bad value reported in one line naming the option."""
    try:
        return RunConfig(**kwargs)
    except ValidationError as e:
        err = e.errors()[0]
        option = "--" + "-".join(str(p) for p in err["loc"]).replace("_", "-")
        raise AgmaskError(f"{option}: {err['msg'].removeprefix('Value error, ')}") from None


def nearest(name: str, choices) -> str:
    """` (did you mean X?)` for the closest of `choices`, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def resolve_stage_config(stage_module, cfg: RunConfig, recipe: dict | None = None):
    """Build a stage's Config from its budget preset, a recipe's options (`agmask.tuning.recipe`) and the user's
    overrides, each over the one before; any bad value is one line."""
    config_cls = getattr(stage_module, "Config", None)
    if config_cls is None:
        return None
    name = stage_module.NAME
    values = dict(getattr(stage_module, "PRESETS", {}).get(cfg.budget, {}))
    values.update(recipe or {})
    overrides = cfg.overrides.get(name, {})
    known = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        hint = nearest(unknown[0], known) or f" (known: {', '.join(sorted(known))})"
        raise AgmaskError(f"unknown option(s) for stage {name}: {', '.join(unknown)}{hint}; "
                          f"`agmask {name} --help` lists them")
    values.update(overrides)
    try:
        return config_cls(**values)
    except ValidationError as e:
        raise AgmaskError(f"bad option for stage {name}: {_describe(e, values)}") from None
    except (TypeError, ValueError) as e:  # a plain-dataclass Config's own checks
        raise AgmaskError(f"bad option for stage {name}: {e}") from None


_WANTED = {"bool_parsing": "true or false", "bool_type": "true or false", "int_parsing": "an integer",
           "int_type": "an integer", "int_from_float": "an integer", "float_parsing": "a number",
           "float_type": "a number", "string_type": "text", "list_type": "a list such as [1, 2]",
           "tuple_type": "a list such as [a, b]"}


def _describe(error: ValidationError, values: dict) -> str:
    """pydantic's first error as `OPTION must be ..., got VALUE`."""
    err = error.errors()[0]
    loc = [str(p) for p in err["loc"]]
    option = loc[0] if loc else "options"
    where = option + "".join(f"[{p}]" for p in loc[1:])
    got = f", got {values[option]!r}" if option in values else ""
    if err["type"] in _WANTED:
        return f"{where} must be {_WANTED[err['type']]}{got}"
    ctx = err.get("ctx", {})
    for kind, sign in (("greater_than_equal", ">="), ("greater_than", ">"), ("less_than_equal", "<="),
                       ("less_than", "<")):
        if err["type"] == kind:
            return f"{where} must be {sign} {next(iter(ctx.values()))}{got}"
    if err["type"] == "literal_error":
        return f"{where} must be one of {ctx.get('expected', '')}{got}"
    if err["type"] == "value_error" and err["msg"].endswith("got true/false"):
        return f"{where} must be a number, not true/false{got}"
    return f"{where}: {err['msg'].removeprefix('Value error, ')}{got}"


def validate_options(cfg: RunConfig, stage_modules: dict) -> dict:
    """Every override names a known stage and option with a valid value, and every stage's Config resolves:
    checked for all stages (not only those about to run), before any work. Returns {stage: Config}."""
    for stage in cfg.overrides:
        if stage not in stage_modules:
            raise AgmaskError(f"--set {stage}.*: unknown stage {stage!r}{nearest(stage, stage_modules)} "
                              f"(stages: {', '.join(stage_modules)})")
    return {name: resolve_stage_config(module, cfg) for name, module in stage_modules.items()}


def option_rows(stage_module) -> list[tuple[str, str, str]]:
    """(name, `type, default ...`, help) for every option of a stage: what `agmask STAGE --help` lists."""
    config_cls = getattr(stage_module, "Config", None)
    if config_cls is None:
        return []
    presets = getattr(stage_module, "PRESETS", {})
    pyd = getattr(config_cls, "__pydantic_fields__", {})
    rows = []
    for f in dataclasses.fields(config_cls):
        info = pyd.get(f.name)
        kind = type_name(info.annotation if info else f.type, info.metadata if info else [])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = f"{kind}, default {_show(default)}"
        per_budget = [f"{budget} {_show(p[f.name])}" for budget, p in presets.items() if f.name in p]
        if per_budget:
            text += f" ({'; '.join(per_budget)})"
        rows.append((f.name, text, f.metadata.get("help", "")))
    return rows


def _show(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def type_name(annotation, metadata=()) -> str:
    """`int >= 1`, `float | None`, `list[int]`, `topk|per_layer|threshold` for an option's annotation."""
    if typing.get_origin(annotation) is Annotated:
        base, *extra = typing.get_args(annotation)
        return type_name(base, [*metadata, *extra])
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        text = "|".join(str(a) for a in args)
    elif origin in (typing.Union, types.UnionType):
        text = " | ".join(type_name(a) for a in args if a is not type(None)) + " | None"
    elif origin in (list, tuple):
        inner = type_name(args[0]) if args else "any"
        text = f"list[{inner}]"
    elif isinstance(annotation, type):
        text = annotation.__name__
    else:
        text = str(annotation)
    flat = [c for m in metadata for c in (getattr(m, "metadata", None) or [m])]  # a Field() holds its bounds
    for m in flat:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(m, attr, None)
            if bound is not None:
                text += f" {sign} {bound}"
    return text


def config_json(obj) -> str:
    """The options as the input hashes see them. An option marked `metadata={"neutral_default": True}` (added after
    runs existed, its default reproducing what they did) is left out at its default, so that adding it does not
    make every finished stage stale."""
    if obj is None:
        return "null"
    data = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            if f.metadata.get("neutral_default") and data.get(f.name) == f.default:
                del data[f.name]
    return json.dumps(data, sort_keys=True, default=str)
