"""The config system: every stage's options are one pydantic dataclass, validated in one place, shown by --help."""
from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Literal

import pytest
from pydantic import ValidationError

from agmask import pipeline
from agmask.cli.main import main
from agmask.config import (PositiveInt, RunConfig, make_run_config, nearest, option_rows, resolve_stage_config,
                           stage_options, type_name, validate_options)
from agmask.errors import AgmaskError


@stage_options
class Example:
    steps: PositiveInt = field(default=3, metadata={"help": "how many"})
    lr: float = field(default=0.5, metadata={"help": "rate"})
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    layers: list[int] = field(default_factory=list)
    sets: tuple[str, ...] = ("x",)
    threshold: float | None = None


def test_stage_options_keep_the_dataclass_api_and_validate():
    e = Example(lr="1e-3", sets=["p", "q"], layers=[1, 2])  # YAML text for a float, a list for a tuple
    assert e.lr == 1e-3 and e.sets == ("p", "q") and dataclasses.asdict(e)["layers"] == [1, 2]
    assert [f.name for f in dataclasses.fields(Example)][:2] == ["steps", "lr"]
    assert dataclasses.fields(Example)[0].metadata["help"] == "how many"
    assert dataclasses.replace(e, steps=4).steps == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.steps = 5
    for bad in ({"steps": 0}, {"steps": True}, {"lr": True}, {"flag": "maybe"}, {"mode": "c"}, {"layers": 9},
                {"nope": 1}):
        with pytest.raises(ValidationError):
            Example(**bad)
    with pytest.raises(ValidationError):
        dataclasses.replace(e, steps=-1)  # replace validates too


def test_every_stage_config_is_a_validated_stage_options_class_with_help():
    for name in pipeline.all_stages():
        module = pipeline.stage_module(name)
        config_cls = getattr(module, "Config", None)
        if config_cls is None:
            continue
        assert hasattr(config_cls, "__pydantic_fields__"), f"{name}.Config is not @stage_options"
        for preset in getattr(module, "PRESETS", {}).values():
            config_cls(**preset)  # every preset is valid
        missing = [row[0] for row in option_rows(module) if not row[2]]
        assert not missing, f"{name} options without help: {missing}"


def test_type_names_and_option_rows_known_answers():
    rows = {name: (kind, help_text) for name, kind, help_text in option_rows(
        type("m", (), {"Config": Example, "NAME": "example", "PRESETS": {"demo": {"steps": 2}, "full": {}}}))}
    assert rows["steps"] == ("int >= 1, default 3 (demo 2)", "how many")
    assert rows["mode"][0] == "a|b, default a"
    assert rows["layers"][0] == "list[int], default []"
    assert rows["threshold"][0] == "float | None, default null"
    assert rows["flag"][0] == "bool, default false"
    assert type_name(PositiveInt | None) == "int >= 1 | None"


def test_nearest_names():
    assert nearest("unlarn", pipeline.STAGES) == " (did you mean unlearn?)"
    assert nearest("eval", pipeline.STAGES) == " (did you mean evaluate?)"
    assert nearest("zzz", pipeline.STAGES) == ""


def test_validate_options_checks_every_stage_not_only_those_that_run():
    stages = {s: pipeline.stage_module(s) for s in pipeline.all_stages()}
    resolved = validate_options(RunConfig(overrides={"mask": {"k": 7}}), stages)
    assert resolved["mask"].k == 7 and resolved["report"] is None
    with pytest.raises(AgmaskError, match=r"unknown stage 'masks' \(did you mean mask\?\)"):
        validate_options(RunConfig(overrides={"masks": {"k": 7}}), stages)
    with pytest.raises(AgmaskError, match=r"bad option for stage mask: layers\[1\] must be an integer"):
        resolve_stage_config(stages["mask"], RunConfig(overrides={"mask": {"layers": [1, "x"]}}))


def test_run_config_errors_name_the_option():
    with pytest.raises(AgmaskError, match="--device: unknown device 'tpu'"):
        make_run_config(device="tpu")
    with pytest.raises(AgmaskError, match="--dtype"):
        make_run_config(dtype="int3")
    assert make_run_config(device="cuda:1").device == "cuda:1"


def test_stage_help_lists_every_option_with_type_default_and_help(capsys):
    from agmask.stages import unlearn

    assert main(["unlearn", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # click wraps long lines
    for f in dataclasses.fields(unlearn.Config):
        assert f.name in out and " ".join(f.metadata["help"].split()) in out, f.name
    assert "steps int >= 1, default 40. optimiser steps" in out  # the demo trains as many
    assert "--set unlearn.OPTION=VALUE" in out


def test_run_help_points_at_the_stage_help(capsys):
    assert main(["run", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "agmask STAGE --help" in out and "--with" in out and "unlearn" in out


def test_an_option_with_a_neutral_default_leaves_the_hashed_options_unchanged_at_that_default():
    import json

    from agmask.config import config_json
    from agmask.stages.unlearn import Config as UnlearnConfig

    default = json.loads(config_json(UnlearnConfig()))
    assert "lr_schedule" not in default and "keep_rest_weight" in default  # only marked options are left out
    linear = json.loads(config_json(dataclasses.replace(UnlearnConfig(), lr_schedule="linear")))
    assert linear == {**default, "lr_schedule": "linear"}  # set to anything else, it is hashed like any option
