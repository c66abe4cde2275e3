"""`agmask tune` on a tiny model: the training-halves-only guarantee, resume, and the recipe the stages use."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agmask import pipeline
from agmask.cli.main import main
from agmask.concepts import EVAL_SETS, LoadedConcept, load_concept
from agmask.config import RunConfig
from agmask.currency import input_parts, stale_reason
from agmask.errors import StageError
from agmask.files import read_json, read_jsonl
from agmask.session import Session
from agmask.tuning import search as search_module

FAST = {"mask": {"k": 12, "num_layers": 2}, "unlearn": {"steps": 2, "batch_size": 2}}
RECIPE_STAGES = ["attribute", "mask", "unlearn"]


def _cfg(root: Path, concept: Path, trials: int = 3, **tune) -> RunConfig:
    overrides = {**FAST, "tune": {"trials": trials, **tune}}
    return RunConfig(model="tiny:llama", concepts=[str(concept)], run_dir=root / "run", overrides=overrides)


def _concept_copy(tmp_path: Path, source: Path) -> Path:
    path = tmp_path / "concept.yaml"
    shutil.copy(source, path)
    return path


def _comparable(rows: list[dict]) -> list[tuple]:
    return [(r["start"], json.dumps(r["options"], sort_keys=True), json.dumps(r["measurements"], sort_keys=True))
            for r in rows]


class Exploding(list):
    """An evaluation set that fails the test when anything reads it."""

    def _boom(self, *a, **k):
        raise AssertionError("an evaluation set was read on the tune path")

    __iter__ = __len__ = __getitem__ = __bool__ = __contains__ = _boom


def test_tune_reads_only_the_training_sets_and_writes_its_outputs(tmp_path, tiny_concept_path):
    loaded = load_concept(str(tiny_concept_path))
    poisoned = loaded.spec.model_copy(update={name: Exploding() for name in EVAL_SETS})
    cfg = _cfg(tmp_path, tiny_concept_path, trials=3, baseline_start=True)  # the demo budget leaves plain NPO out
    session = Session(cfg, LoadedConcept(poisoned, loaded.source, loaded.text), cfg.run_dir)
    pipeline.check_manifest(session)  # as the driver does: the model's sha256
    assert pipeline.run_stage(session, "tune") is True  # the real stage: training view, halves, Optuna, rule
    out = cfg.run_dir / "tune"
    rows = read_jsonl(out / "trials.jsonl")
    assert [r["trial"] for r in rows] == [0, 1, 2] and [r["start"] for r in rows] == ["defaults", "plain NPO",
                                                                                     "without keep the rest"]
    assert all(r["state"] == "complete" and r["steps"] == 2 and r["mask"]["neurons"] == 12 for r in rows)
    for r in rows:  # measured on half B: 2 of tiny_concept's 4 forget_train prompts, under both training leads
        assert set(r["measurements"]["median_rank_by_lead"]) == {'The movie is "', 'The answer is "'}
        assert r["options"]["mask"] == {"selection": "score", "k": 12, "num_layers": 2}  # --set: held, not searched
    choice = read_json(out / "choice.json")
    from agmask.tuning.rule import choose

    assert choice["trial"] == choose(rows) and choice["options"] == choice["trial"]["options"]
    assert choice["missed_constraints"] == [name for name, c in choice["trial"]["constraints"].items()
                                            if c is not None and not c["met"]]
    assert choice["space"]["fixed"]["mask.k"] == 12 and "unlearn.lr" in choice["space"]["searched"]
    halves = choice["halves"]  # what half B's neighbour locality stands on
    assert halves["retain_a"] + halves["retain_b"] == len(loaded.spec.retain_train)
    assert 0 <= halves["neighbour_b_unseen_in_a"] <= halves["neighbour_b"] <= halves["retain_b"]
    assert (out / "trials.png").stat().st_size > 1000 and (out / "optuna.db").is_file()
    assert pipeline.run_stage(session, "tune") is False  # up to date


def test_without_the_baseline_start_a_search_skips_plain_npo_and_times_each_trial(tmp_path, tiny_concept_path):
    cfg = _cfg(tmp_path, tiny_concept_path, trials=3, baseline_start=False)
    pipeline.run_pipeline(cfg, stages=["tune"])
    rows = read_jsonl(cfg.run_dir / "tune" / "trials.jsonl")
    assert [r["start"] for r in rows] == ["defaults", "without keep the rest", "sampled"]
    for r in rows:  # where a trial's time went: training on half A, scoring half B (the rest: attribution, mask)
        assert r["time"]["train"] > 0 and r["time"]["measure"] > 0  # in ms: a fast machine scores in < 0.05 s
        assert r["time"]["train"] + r["time"]["measure"] <= r["seconds"] + 0.1


def test_an_interrupted_search_keeps_its_finished_trials_and_runs_to_the_budget(tmp_path, tiny_concept_path,
                                                                                monkeypatch):
    real_trial = search_module.run_trial
    calls = []

    def counting(*args, interrupt_at=None, **kwargs):
        calls.append(1)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return real_trial(*args, **kwargs)

    # an uninterrupted search, for comparison
    reference = _cfg(tmp_path / "reference", tiny_concept_path, trials=3)
    pipeline.run_pipeline(reference, stages=["tune"])
    expected = read_jsonl(reference.run_dir / "tune" / "trials.jsonl")

    cfg = _cfg(tmp_path / "resumed", tiny_concept_path, trials=3)
    monkeypatch.setattr(search_module, "run_trial", lambda *a, **k: counting(*a, interrupt_at=2, **k))
    with pytest.raises(KeyboardInterrupt):  # during the second trial
        pipeline.run_pipeline(cfg, stages=["tune"])
    assert pipeline.read_done(cfg.run_dir, "tune") is None and (cfg.run_dir / ".staging" / "tune").is_dir()
    calls.clear()
    monkeypatch.setattr(search_module, "run_trial", lambda *a, **k: counting(*a, **k))
    pipeline.run_pipeline(cfg, stages=["tune"])
    assert len(calls) == 2  # trial 0 was kept; the interrupted one ran again, then one more
    rows = read_jsonl(cfg.run_dir / "tune" / "trials.jsonl")
    assert len(rows) == 3 and [r["trial"] for r in rows] == [0, 2, 3]  # trial 1 was the interrupted one
    # the same trials as a search that was never interrupted (the interrupted one reruns after the start points
    # still queued, so the order may differ)
    assert sorted(_comparable(rows)) == sorted(_comparable(expected))

    calls.clear()  # a larger budget continues the finished search
    more = _cfg(tmp_path / "resumed", tiny_concept_path, trials=4)
    pipeline.run_pipeline(more, stages=["tune"])
    rows4 = read_jsonl(cfg.run_dir / "tune" / "trials.jsonl")
    assert len(calls) == 1 and len(rows4) == 4 and _comparable(rows4[:3]) == _comparable(rows)
    calls.clear()  # --force starts a new search
    pipeline.run_pipeline(more.model_copy(update={"force": True}), stages=["tune"])
    assert len(calls) == 4 and [r["trial"] for r in read_jsonl(cfg.run_dir / "tune" / "trials.jsonl")] == [0, 1, 2, 3]


def test_an_interrupted_search_settles_with_a_lower_trial_count_on_the_trials_it_finished(tmp_path,
                                                                                         tiny_concept_path, monkeypatch):
    real_trial = search_module.run_trial
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_trial(*args, **kwargs)

    monkeypatch.setattr(search_module, "run_trial", counting)
    with pytest.raises(KeyboardInterrupt):  # during the third of 4 trials
        pipeline.run_pipeline(_cfg(tmp_path, tiny_concept_path, trials=4), stages=["tune"])
    calls.clear()
    pipeline.run_pipeline(_cfg(tmp_path, tiny_concept_path, trials=2), stages=["tune"])
    assert calls == []  # the two finished trials are kept and settle the search
    rows = read_jsonl(tmp_path / "run" / "tune" / "trials.jsonl")
    assert [r["trial"] for r in rows] == [0, 1] and read_json(tmp_path / "run" / "tune" / "choice.json")["trials"] == 2
    calls.clear()  # another option than the trial count starts afresh
    pipeline.run_pipeline(_cfg(tmp_path, tiny_concept_path, trials=1, startup_trials=3), stages=["tune"])
    assert len(calls) == 1


def _unlearn_summary(cfg: RunConfig) -> dict:
    return read_json(cfg.run_dir / "unlearn" / "summary.json")


def _resolved(cfg: RunConfig, stage: str) -> dict:
    return json.loads(pipeline.read_done(cfg.run_dir, stage)["stage_config"])


def test_the_choice_trains_the_adapter_under_auto_and_not_under_defaults_and_set_options_win(tmp_path,
                                                                                            tiny_concept_path):
    # one sampled trial (no starting points): its options differ from the defaults (lr is continuous)
    cfg = _cfg(tmp_path, _concept_copy(tmp_path, tiny_concept_path), trials=1, start_points=False)
    pipeline.run_pipeline(cfg, stages=["unlearn", "mask", "attribute", "tune"])  # tune runs first (pipeline order)
    choice = read_json(cfg.run_dir / "tune" / "choice.json")["options"]
    assert choice["unlearn"]["lr"] != 2e-3
    for stage in RECIPE_STAGES:
        resolved = _resolved(cfg, stage)
        assert {k: resolved[k] for k in choice[stage]} == choice[stage]
    summary = _unlearn_summary(cfg)
    assert summary["recipe"] == {"name": "tune", "trial": 0, "source": "tune/choice.json", "options": choice}
    assert summary["config"]["lr"] == choice["unlearn"]["lr"]
    assert read_json(cfg.run_dir / "manifest.json")["recipe"] == {"name": "tune", "trial": 0}

    defaults = cfg.model_copy(update={"recipe": "defaults"})
    ran = [pipeline.run_stage(Session.create(defaults), s) for s in RECIPE_STAGES]
    assert ran == [True, True, True]  # the recipe is part of their input hashes
    summary = _unlearn_summary(defaults)
    assert summary["recipe"]["name"] == "defaults" and "--recipe defaults" in summary["recipe"]["note"]
    assert summary["config"]["lr"] == 2e-3 and _resolved(defaults, "attribute")["retain_weight"] == 0.5
    assert read_json(cfg.run_dir / "manifest.json")["recipe"] == {"name": "defaults", "trial": None}
    auto = Session.create(cfg)  # the adapter now on disk is not the one --recipe auto asks for, and it says why
    auto.model_sha256 = read_json(cfg.run_dir / "manifest.json")["model"]["sha256"]
    why = stale_reason(pipeline.read_done(cfg.run_dir, "unlearn"), input_parts(auto, "unlearn"))
    assert f"lr 0.002 -> {json.dumps(choice['unlearn']['lr'])}" in why and "tune/choice.json changed them" in why

    mine = cfg.model_copy(update={"overrides": {**cfg.overrides, "unlearn": {**FAST["unlearn"], "lr": 1e-3}}})
    pipeline.run_pipeline(mine, stages=RECIPE_STAGES)
    summary = _unlearn_summary(mine)
    assert summary["config"]["lr"] == 1e-3  # --set beats the choice ...
    assert summary["config"]["retain_weight"] == choice["unlearn"]["retain_weight"]  # ... the rest is the choice's
    assert summary["recipe"]["name"] == "tune"


def test_a_stale_choice_is_not_applied_and_a_damaged_one_is_an_error(tmp_path, tiny_concept_path):
    concept = _concept_copy(tmp_path, tiny_concept_path)
    cfg = _cfg(tmp_path, concept, trials=1, start_points=False)
    pipeline.run_pipeline(cfg, stages=["tune"])
    concept.write_text(concept.read_text() + "# edited after tuning\n")  # the concept file changed
    pipeline.run_pipeline(cfg, stages=RECIPE_STAGES)
    recipe = _unlearn_summary(cfg)["recipe"]
    assert recipe["name"] == "defaults" and "not current" in recipe["note"] and "concept file changed" in recipe["note"]
    assert _unlearn_summary(cfg)["config"]["lr"] == 2e-3

    pipeline.run_pipeline(cfg, stages=["tune"])  # tuned again for the edited file: applied again
    choice = cfg.run_dir / "tune" / "choice.json"
    assert Session.create(cfg).stage_config("unlearn").lr == read_json(choice)["options"]["unlearn"]["lr"]
    choice.write_text(choice.read_text().replace('"lr"', '"lr" ', 1))
    with pytest.raises(StageError, match=r"tune/choice.json does not match .*agmask tune --force"):
        pipeline.run_pipeline(cfg, stages=["attribute"])
    assert Session.create(cfg.model_copy(update={"recipe": "defaults"})).stage_config("unlearn").lr == 2e-3


def test_the_cli_has_tune_and_recipe(tmp_path, tiny_concept_path, capsys):
    sets = [a for s, o in FAST.items() for k, v in o.items() for a in ("--set", f"{s}.{k}={v}")]
    args = ["--model", "tiny:llama", "--concept", str(tiny_concept_path), "--run-dir", str(tmp_path / "run"), "-q",
            *sets]
    assert main(["tune", "--trials", "0", *args]) == 2
    assert "--trials" in capsys.readouterr().err
    assert main(["tune", "--trials", "1", *args]) == 0  # the flag is --set tune.trials=1 (the demo runs 3)
    assert read_json(tmp_path / "run" / "tune" / "choice.json")["trials"] == 1
    args += ["--set", "tune.trials=1"]  # the recipe stages check that the choice is current for these options
    assert main(["attribute", *args, "--recipe", "mine"]) == 2
    assert "'mine' is not one of 'auto', 'defaults'" in capsys.readouterr().err
    assert pipeline.all_stages().index("tune") == pipeline.all_stages().index("attribute") - 1
    assert main(["tune", "--help"]) == 0
    text = capsys.readouterr().out
    assert "search_localisation" in text and "--recipe [auto|defaults]" in text


def test_a_trial_adapts_only_the_layers_its_mask_touches(tmp_path, tiny_concept_path, monkeypatch):
    import agmask.lora as lora

    seen, real = [], lora.masked_lora

    def spy(model, mask, layers=None, **kw):
        seen.append((list(layers), mask.any(1).nonzero().flatten().tolist()))
        return real(model, mask, layers=layers, **kw)

    monkeypatch.setattr(lora, "masked_lora", spy)
    cfg = _cfg(tmp_path, tiny_concept_path, trials=1)
    cfg = cfg.model_copy(update={"overrides": {**cfg.overrides, "mask": {"k": 3, "num_layers": 0}}})  # every layer
    pipeline.run_pipeline(cfg, stages=["tune"])
    row = read_jsonl(cfg.run_dir / "tune" / "trials.jsonl")[0]
    assert seen and all(layers == touched for layers, touched in seen)  # as the unlearn stage adapts them
    assert row["mask"]["layers"] == seen[0][0] == [l for l, n in enumerate(row["mask"]["per_layer"]) if n]
    assert sum(row["mask"]["per_layer"]) == row["mask"]["neurons"] == 3
