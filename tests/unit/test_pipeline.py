"""The stage driver: DONE markers, resume, reruns on changed inputs, atomic failure, manifest checks."""
from __future__ import annotations

import shutil

import pytest

from agmask.config import RunConfig
from agmask.errors import AgmaskError
from agmask.files import read_json
from agmask.pipeline import input_hash, read_done, run_pipeline, run_stage
from agmask.session import Session


def _cfg(tmp_path, concept, **kw) -> RunConfig:
    return RunConfig(model="tiny:llama", concepts=[str(concept)], run_dir=tmp_path / "run", **kw)


@pytest.fixture
def concept_copy(tmp_path, tiny_concept_path):
    path = tmp_path / "concept.yaml"
    shutil.copy(tiny_concept_path, path)
    return path


def test_baseline_writes_its_artefacts_and_a_rerun_skips(tmp_path, concept_copy):
    cfg = _cfg(tmp_path, concept_copy)
    run_pipeline(cfg, stages=["baseline"])
    run_dir = cfg.run_dir
    assert (run_dir / "manifest.json").is_file()
    rows = (run_dir / "baseline" / "answers.jsonl").read_text().splitlines()
    assert len(rows) == 4 + 4 + 2 + 3 + 3 + 3  # every question set, relearn excluded
    summary = read_json(run_dir / "baseline" / "summary.json")
    assert set(summary) == {"forget_train", "forget_eval", "probes", "neighbors", "retain_train", "retain_eval"}
    done = read_done(run_dir, "baseline")
    assert set(done["outputs"]) == {"baseline/answers.jsonl", "baseline/summary.json"}

    session = Session.create(cfg)
    assert run_stage(session, "baseline") is False  # up to date


def test_edited_concept_or_force_or_changed_option_reruns(tmp_path, concept_copy):
    cfg = _cfg(tmp_path, concept_copy)
    run_pipeline(cfg, stages=["baseline"])
    assert run_stage(Session.create(cfg), "baseline") is False
    concept_copy.write_text(concept_copy.read_text().replace("What is 2 plus 2?", "What is 3 plus 3?"))
    assert run_stage(Session.create(cfg), "baseline") is True
    assert run_stage(Session.create(cfg), "baseline") is False
    forced = _cfg(tmp_path, concept_copy, force=True)
    assert run_stage(Session.create(forced), "baseline") is True
    changed = _cfg(tmp_path, concept_copy, overrides={"baseline": {"generation_tokens": 3}})
    assert run_stage(Session.create(changed), "baseline") is True


def test_a_failing_stage_keeps_its_previous_results_whole(tmp_path, concept_copy, monkeypatch):
    """A stage is a transaction: a failed (forced) rerun leaves the previous outputs and their DONE marker
    as they were, so they stay valid and the next run skips the stage. (Before stage transactions, the
    marker was deleted first and the stage redone.)"""
    cfg = _cfg(tmp_path, concept_copy)
    run_pipeline(cfg, stages=["baseline"])
    before = {p: p.read_bytes() for p in (cfg.run_dir / "baseline").iterdir()}
    import agmask.stages.baseline as baseline

    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(baseline, "score_item", explode)
    with pytest.raises(RuntimeError):
        run_stage(Session.create(_cfg(tmp_path, concept_copy, force=True)), "baseline")
    assert {p: p.read_bytes() for p in (cfg.run_dir / "baseline").iterdir()} == before
    assert not list(cfg.run_dir.rglob("*.tmp"))
    monkeypatch.undo()
    assert run_stage(Session.create(cfg), "baseline") is False  # the previous results are still current


def test_input_hash_changes_with_model_and_seed(tmp_path, concept_copy):
    a = Session.create(_cfg(tmp_path, concept_copy))
    from agmask.pipeline import write_manifest

    write_manifest(a)
    h = input_hash(a, "baseline")
    b = Session.create(_cfg(tmp_path, concept_copy, seed=3))
    assert input_hash(b, "baseline") != h


def test_a_run_dir_refuses_another_model(tmp_path, concept_copy):
    run_pipeline(_cfg(tmp_path, concept_copy), stages=["baseline"])
    other = RunConfig(model="tiny:qwen2", concepts=[str(concept_copy)], run_dir=tmp_path / "run")
    with pytest.raises(AgmaskError, match="was made for model 'tiny:llama'"):
        run_pipeline(other, stages=["baseline"])


def test_unknown_stage_and_unknown_option(tmp_path, concept_copy):
    with pytest.raises(AgmaskError, match="unknown stage 'nope'"):
        run_pipeline(_cfg(tmp_path, concept_copy), stages=["nope"])
    with pytest.raises(AgmaskError, match="unknown option.*baseline: tokens"):
        run_pipeline(_cfg(tmp_path, concept_copy, overrides={"baseline": {"tokens": 3}}), stages=["baseline"])


def test_scalar_options_are_checked_and_a_float_takes_a_number_written_as_text(tmp_path, concept_copy):
    from agmask.config import resolve_stage_config
    from agmask.stages import mask, unlearn

    cfg = _cfg(tmp_path, concept_copy, overrides={"unlearn": {"lr": "1e-3", "retain_weight": 5, "forget_all_leads": True}})
    conf = resolve_stage_config(unlearn, cfg)
    assert conf.lr == 1e-3 and conf.retain_weight == 5 and conf.forget_all_leads is True
    assert resolve_stage_config(mask, _cfg(tmp_path, concept_copy, overrides={"mask": {"threshold": None}})).threshold is None
    for bad in ({"forget_all_leads": "yes please"}, {"steps": True}, {"method": 3}):
        with pytest.raises(AgmaskError, match="bad option for stage unlearn"):
            resolve_stage_config(unlearn, _cfg(tmp_path, concept_copy, overrides={"unlearn": bad}))
