"""The evaluate and report stages through the real driver, after a short real unlearning run."""
from __future__ import annotations

import shutil

import pytest

from agmask import pipeline
from agmask.config import RunConfig, resolve_stage_config
from agmask.evaluate import METRICS
from agmask.evaluate.quantize import lora_layers
from agmask.files import read_json
from agmask.session import Session


FAST = {"mask": {"k": 12, "num_layers": 2}, "unlearn": {"steps": 2, "batch_size": 2},
        "evaluate": {"corpus_tokens": 128}}


def test_evaluate_and_report_stages_run_resume_and_restore_the_model(tmp_path, tiny_concept_path):
    cfg = RunConfig(model="tiny:llama", concepts=[str(tiny_concept_path)], run_dir=tmp_path / "run", overrides=FAST)
    run = pipeline.run_pipeline(cfg)[0]
    state = read_json(run / "eval" / "metrics.json")
    assert list(state["metrics"]) == list(METRICS)
    assert state["base_scores_from_baseline"] and state["adapter_dir"] == "adapters/tinyfilm"
    baseline = read_json(run / "baseline" / "summary.json")
    f = state["metrics"]["forget_efficacy"]
    assert f["base"]["mean_answer_logprob"] == pytest.approx(baseline["forget_eval"]["mean_answer_logprob"])
    assert f["adapted"]["mean_answer_logprob"] != pytest.approx(f["base"]["mean_answer_logprob"])
    assert (run / "eval" / "generations.jsonl").is_file() and (run / "eval" / "pca.png").is_file()
    assert "Phase 6" in (run / "report.html").read_text(encoding="utf-8")
    assert set(pipeline.read_done(run, "report")["outputs"]) == {"report.html"}

    session = Session.create(cfg)
    assert pipeline.run_stage(session, "evaluate") is False  # up to date
    forced = Session.create(cfg.model_copy(update={"force": True}))
    assert pipeline.run_stage(forced, "evaluate") is True
    model, _, _ = forced.model()
    assert lora_layers(model) == []  # the adapter was unloaded after evaluation


def test_evaluate_without_an_adapter_is_a_clean_error(tmp_path, tiny_concept_path):
    """A deleted adapter is caught by the integrity check (the file and the stage to rerun), before evaluate
    starts. (It used to be caught by evaluate itself: "no adapter".)"""
    cfg = RunConfig(model="tiny:llama", concepts=[str(tiny_concept_path)], run_dir=tmp_path / "run", overrides=FAST)
    pipeline.run_pipeline(cfg, stages=["baseline", "probe", "attribute", "mask", "unlearn"])
    shutil.rmtree(tmp_path / "run" / "adapters")
    with pytest.raises(pipeline.AgmaskError, match=r"adapters/tinyfilm/\S+ is missing: rerun stage unlearn"):
        pipeline.run_pipeline(cfg, stages=["evaluate"])


@pytest.mark.parametrize("budget", ["demo", "full"])
def test_stage_configs_resolve_for_every_budget(budget):
    from agmask.stages import baseline, evaluate

    conf = resolve_stage_config(evaluate, RunConfig(budget=budget))
    # equal reply lengths: the evaluation reuses the baseline's greedy replies as the base side
    assert conf.generation_tokens == resolve_stage_config(baseline, RunConfig(budget=budget)).generation_tokens
