"""lm-evaluation-harness on a tiny model with a task the test writes (a YAML task over a local JSON file),
offline: any network connection fails the test."""
from __future__ import annotations

import json
import socket

import pytest

from agmask.concepts import load_concept
from agmask.errors import StageError
from agmask.evaluate import EvalConfig, evaluate_model
from evalkit import add_adapter, force_answer

TASK = """task: agmask_tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture
def offline(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("lm-eval tried the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


@pytest.fixture
def task_dir(tmp_path):
    """Four questions whose reply starts after a quote; the right choice is Inception in two, Memento in two."""
    d = tmp_path / "tasks"
    d.mkdir()
    rows = [{"question": f'Question {i}: the film is "', "choices": ["Inception", "Memento", "Titanic"],
             "answer": 0 if i < 2 else 1} for i in range(4)]
    (d / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (d / "tiny.yaml").write_text(TASK.format(data=d / "data.jsonl"))
    return d


def test_lm_eval_runs_a_local_task_offline_on_base_and_adapted(tiny, tiny_concept_path, task_dir, offline, tmp_path):
    model, tok, _ = tiny
    spec = load_concept(str(tiny_concept_path)).spec
    adapted = add_adapter(force_answer(model, tok, "Inception"), [1], std=0.0)  # says Inception after a quote
    cfg = EvalConfig(metrics=("lm_eval",), lm_eval_tasks=("agmask_tiny_mc",), lm_eval_include_path=str(task_dir))
    out = evaluate_model(adapted, tok, spec, cfg, tmp_path / "eval")["metrics"]["lm_eval"]
    acc = out["tasks"]["agmask_tiny_mc"]["acc,none"]
    assert acc["base"] == acc["adapted"] == 0.5  # right on the two Inception questions only
    assert acc["base_stderr"] == pytest.approx((0.25 / 3) ** 0.5)  # sample std / sqrt(n): sqrt(p(1-p) n/(n-1) / n)


def test_lm_eval_is_skipped_without_tasks_and_unknown_tasks_fail_in_one_line(tiny_concept_path, task_dir, offline,
                                                                              tmp_path):
    from agmask.models import load

    model, tok, _ = load("tiny:llama")
    spec = load_concept(str(tiny_concept_path)).spec
    adapted = add_adapter(model, [1])
    skipped = evaluate_model(adapted, tok, spec, EvalConfig(metrics=("lm_eval",)), tmp_path / "a")["metrics"]["lm_eval"]
    assert skipped["tasks"] == {} and "empty" in skipped["skipped"]
    cfg = EvalConfig(metrics=("lm_eval",), lm_eval_tasks=("no_such_task",), lm_eval_include_path=str(task_dir))
    with pytest.raises(StageError, match="unknown lm-eval task") as info:
        evaluate_model(adapted, tok, spec, cfg, tmp_path / "b")
    assert "\n" not in str(info.value)
