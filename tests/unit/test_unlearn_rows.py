"""Every method's loss rows on the tiny models match rows recorded before the recommendation terms existed
(issue 17 item 4 adds options that default to off: with them off, no number may move).

The recorded file was written by this module at commit 7f582b6, whose sources lack those options (the defaults
were plain NPO then: the rows train with PLAIN_NPO):
    PYTHONPATH=<that commit's src> python tests/unit/test_unlearn_rows.py tests/fixtures/unlearn_rows.json 7f582b6
Rows are compared with a tolerance for other CPUs' float rounding, far below any change of the loss.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from agmask.concepts import load_concept
from agmask.lora import attach_lora
from agmask.stages.unlearn import Config
from agmask.unlearn import METHODS
from agmask.unlearn.trainer import train
from runkit import PLAIN_NPO

FIXTURES = Path(__file__).parent.parent / "fixtures"
RECORDED = FIXTURES / "unlearn_rows.json"
MODELS = ("tiny:llama", "tiny:qwen2")
OPTIONS = ({}, {"first_token_weight": 1.0, "target_weight": 0.5})
# the forget set as it was recorded: the first alias alone, from its first token (both options came later)
BEFORE_ALIASES = {"forget_all_aliases": False, "forget_from_distinguishing_token": False}


def loss_rows(model_name: str, method: str, options: dict) -> list[dict]:
    """3 steps of `method` on a tiny model, the tiny concept (which has recommend_train), seed 3; rows without time."""
    from agmask.models import load

    model, tok, info = load(model_name)
    mask = torch.zeros(info.num_layers, info.intermediate_size, dtype=torch.bool)
    mask[1, :9] = True
    mask[2, 30:35] = True
    param = {"mask": mask, "random": mask.roll(7, 1), "unmasked": None}[METHODS[method].parameterisation]
    adapter = attach_lora(model, param, layers=[1, 2], r=4)
    conf = dataclasses.replace(Config(), **{**PLAIN_NPO, "steps": 3, "batch_size": 2, "lr": 5e-2, **options,
                                            **BEFORE_ALIASES})
    spec = load_concept(str(FIXTURES / "tiny_concept.yaml")).spec
    rows = train(adapter, METHODS[method], tok, spec, conf, seed=3)
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def _key(model_name: str, method: str, options: dict) -> str:
    return f"{model_name} {method} {json.dumps(options, sort_keys=True)}"


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_loss_rows_match_the_rows_recorded_before_the_recommendation_terms(model_name, method):
    recorded = json.loads(RECORDED.read_text())["rows"]
    for options in OPTIONS:
        rows = loss_rows(model_name, method, options)
        expected = recorded[_key(model_name, method, options)]
        assert [list(r) for r in rows] == [list(r) for r in expected]  # the same terms, in the same order
        for row, want in zip(rows, expected):
            assert row == pytest.approx(want, rel=1e-4, abs=1e-5), (options, row, want)


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = {"about": f"loss rows of every method (see tests/unit/{Path(__file__).name}), recorded by the sources "
                    f"at commit {sys.argv[2]}", "rows": {}}
    for name in MODELS:
        for m in sorted(METHODS):
            for opts in OPTIONS:
                out["rows"][_key(name, m, opts)] = loss_rows(name, m, opts)
    Path(sys.argv[1]).write_text(json.dumps(out, indent=1) + "\n")
