"""The evaluate and report stages through the real driver, with a stand-in `unlearn` stage that saves a
PEFT adapter the way the real one will (adapters/<concept>/ + unlearn/summary.json)."""
from __future__ import annotations

import shutil
import sys
import types

import pytest

from agmask import pipeline
from agmask.config import RunConfig, resolve_stage_config
from agmask.evaluate import METRICS
from agmask.evaluate.quantize import lora_layers
from agmask.files import read_json, write_json
from agmask.session import Session
from evalkit import add_adapter


@pytest.fixture
def fake_unlearn(monkeypatch):
    stage = types.ModuleType("agmask.stages.unlearn")
    stage.NAME, stage.DIR, stage.DEPENDS, stage.EXTRA_OUTPUTS = "unlearn", "unlearn", ("baseline",), ["adapters"]

    def run(cfg, run_dir, session):
        model, _, _ = session.model()
        adapted = add_adapter(model, [1], std=0.3)
        adapted.save_pretrained(str(run_dir / "adapters" / session.spec.name))
        adapted.unload()  # the session's model is the base model again
        write_json(run_dir / "unlearn" / "summary.json", {"steps": 0, "method": "random stand-in"})

    stage.run = run
    monkeypatch.setitem(sys.modules, "agmask.stages.unlearn", stage)
    monkeypatch.setattr(pipeline, "STAGES", ["baseline", "probe", "unlearn", "evaluate", "report"])


def test_evaluate_and_report_stages_run_resume_and_restore_the_model(tmp_path, tiny_concept_path, fake_unlearn):
    cfg = RunConfig(model="tiny:llama", concepts=[str(tiny_concept_path)], run_dir=tmp_path / "run",
                    overrides={"evaluate": {"corpus_tokens": 128}})
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


def test_evaluate_without_an_adapter_is_a_clean_error(tmp_path, tiny_concept_path, fake_unlearn):
    cfg = RunConfig(model="tiny:llama", concepts=[str(tiny_concept_path)], run_dir=tmp_path / "run")
    pipeline.run_pipeline(cfg, stages=["baseline", "unlearn"])
    shutil.rmtree(tmp_path / "run" / "adapters")
    with pytest.raises(pipeline.AgmaskError, match="no adapter"):
        pipeline.run_pipeline(cfg, stages=["evaluate"])


@pytest.mark.parametrize("budget", ["demo", "full"])
def test_stage_configs_resolve_for_every_budget(budget):
    from agmask.stages import baseline, evaluate

    conf = resolve_stage_config(evaluate, RunConfig(budget=budget))
    # equal reply lengths: the evaluation reuses the baseline's greedy replies as the base side
    assert conf.generation_tokens == resolve_stage_config(baseline, RunConfig(budget=budget)).generation_tokens
