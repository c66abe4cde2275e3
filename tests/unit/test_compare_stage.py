"""`agmask compare` on a tiny model: the table (variants x seeds), DONE hashes, resume after an interruption,
rows kept when a variant is added, the report section and the CLI."""
from __future__ import annotations

import shutil

import pytest
import torch

import agmask.comparison.runner as runner
from agmask.cli.main import main
from agmask.config import RunConfig
from agmask.currency import current_stages
from agmask.errors import AgmaskError
from agmask.files import load_tensors, read_json
from agmask.pipeline import read_done, run_pipeline, run_stage
from agmask.rundir import RunDir
from agmask.session import Session
from runkit import one_torch_thread

UPSTREAM = {"mask": {"k": 12, "num_layers": 1}}  # 12 of 80 units in 1 of the 3 layers: the others stay free
FAST = {**UPSTREAM, "unlearn": {"steps": 2, "batch_size": 2}, "evaluate": {"corpus_tokens": 128}}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_concept_path):
    """baseline, attribute and mask done on tiny:llama (what compare reads)."""
    run_dir = tmp_path_factory.mktemp("compare") / "run"
    with one_torch_thread():  # set up before the per-test fixture that does it
        run_pipeline(RunConfig(model="tiny:llama", concepts=[str(tiny_concept_path)], run_dir=run_dir,
                               overrides=UPSTREAM), stages=["baseline", "attribute", "mask"])
    return run_dir


def _cfg(prepared, tmp_path, tiny_concept_path, force=False, **compare) -> RunConfig:
    run_dir = tmp_path / "run"
    if not run_dir.exists():
        shutil.copytree(prepared, run_dir, symlinks=True)
    options = {"relearn_steps": 2, **compare}
    return RunConfig(model="tiny:llama", concepts=[str(tiny_concept_path)], run_dir=run_dir, force=force,
                     overrides={**FAST, "compare": options})


@pytest.fixture
def trainings(monkeypatch):
    """Counts the training runs compare starts, as (variant method, seed)."""
    calls = []
    real = runner.train

    def counted(adapter, method, *args, seed=0, **kwargs):
        calls.append((method.name, seed))
        return real(adapter, method, *args, seed=seed, **kwargs)

    monkeypatch.setattr(runner, "train", counted)
    return calls


def _rows(data: dict) -> list[tuple[str, int]]:
    return [(r["variant"], r["seed"]) for entry in data["variants"].values() for r in entry["rows"]]


def test_compare_writes_one_row_per_variant_and_seed_covered_by_its_done_hash(prepared, tmp_path, tiny_concept_path,
                                                                               trainings, capsys):
    cfg = _cfg(prepared, tmp_path, tiny_concept_path, seeds=2)
    run_pipeline(cfg, stages=["compare"])
    out = cfg.run_dir / "compare"
    data = read_json(out / "compare.json")
    variants = ["causal", "saliency", "random_same_layers", "random_layers", "full_layers", "unmasked"]
    assert list(data["variants"]) == variants and data["settings"]["seeds"] == [0, 1] and data["complete"]
    assert _rows(data) == [(v, s) for v in variants for s in (0, 1)]
    assert len(trainings) == 10  # unmasked is the same training as full_layers: copied, not trained again
    for name, entry in data["variants"].items():
        assert entry["n_seeds"] == 2 and entry["n"]["neighbours_unseen_abs_dlogp"] == 2
        assert entry["sd"]["neighbours_unseen_abs_dlogp"] is not None and entry["mean"]["steps_run"] == 2
        assert entry["mean"]["retain_kl"] >= 0 and entry["n"]["steps_run"] == 2
    assert [r["same_as"] for r in data["variants"]["unmasked"]["rows"]] == ["full_layers", "full_layers"]
    # masks as intended: causal made here (the run used score selection), the controls copy its layers and counts
    masks = load_tensors(out / "masks.safetensors")
    assert set(masks) == {"causal", "saliency"} and data["masks"]["causal"]["units"] == int(masks["causal"].sum())
    assert "made here" in data["masks"]["causal"]["source"] and "run's mask" in data["masks"]["saliency"]["source"]
    causal_layers = data["masks"]["causal"]["per_layer"]
    by = {v: [r["mask"] for r in e["rows"]] for v, e in data["variants"].items()}
    assert all(m["per_layer"] == causal_layers for m in by["causal"] + by["random_same_layers"])
    for m in by["random_layers"]:
        assert sorted(m["per_layer"].values()) == sorted(causal_layers.values()) and not set(m["per_layer"]) & set(causal_layers)
    assert all(m["units"] == 80 * len(causal_layers) for m in by["full_layers"]) and by["unmasked"][0]["units"] is None
    saliency = load_tensors(RunDir(cfg.run_dir).mask)["mask"]  # the run's own mask (score selection) is reused
    assert torch.equal(masks["saliency"], saliency) and by["saliency"][0]["units"] == int(saliency.sum())
    # the per-seed rows differ where the seed draws (LoRA init, batch order, random masks)
    rand = data["variants"]["random_same_layers"]["rows"]
    assert rand[0]["columns"]["neighbours_unseen_abs_dlogp"] != rand[1]["columns"]["neighbours_unseen_abs_dlogp"]
    assert (out / "compare.png").is_file() and (out / "causal" / "seed1" / "metrics.json").is_file()
    done = read_done(cfg.run_dir, "compare")
    assert {"compare/compare.json", "compare/compare.png", "compare/masks.safetensors",
            "compare/causal/seed0/metrics.json"} <= set(done["outputs"])
    assert current_stages(cfg.run_dir)["compare"] is None
    assert run_stage(Session.create(cfg), "compare") is False  # up to date
    # the report shows the section from compare.json alone
    from agmask.report import build_report

    page = build_report(cfg.run_dir).read_text(encoding="utf-8")
    assert 'id="compare"' in page and "random_layers" in page and "compare/compare.png" in page and " ± " in page
    from agmask.cli.summary import print_run_summary

    print_run_summary(cfg.run_dir, stage="compare")
    printed = capsys.readouterr().out
    assert "6 variants x 2 seed(s)" in printed and "random_same_layers" in printed


def test_the_causal_mask_made_by_compare_is_the_mask_stage_s_causal_selection(prepared, tmp_path, tiny_concept_path):
    cfg = _cfg(prepared, tmp_path, tiny_concept_path, seeds=1, variants=["causal"], steps=1)
    run_pipeline(cfg, stages=["compare"])
    made = load_tensors(cfg.run_dir / "compare" / "masks.safetensors")["causal"]
    causal = cfg.model_copy(update={"overrides": {**cfg.overrides, "mask": {**UPSTREAM["mask"], "selection": "causal"}}})
    run_pipeline(causal, stages=["mask"])  # the run's mask is now the causal selection
    assert torch.equal(load_tensors(RunDir(cfg.run_dir).mask)["mask"], made)
    assert read_done(cfg.run_dir, "compare") is None  # its input (the mask) changed: no longer current
    run_pipeline(causal, stages=["compare"])
    data = read_json(cfg.run_dir / "compare" / "compare.json")
    assert "run's mask" in data["masks"]["causal"]["source"]  # reused, not made again


def _killed_during_the_second_row(cfg: RunConfig, monkeypatch) -> None:
    """Run compare with its second row's evaluation failing; evaluations work again afterwards."""
    real = runner.evaluate_model
    calls = []

    def fails_on_the_second_row(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed during the second row")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "evaluate_model", fails_on_the_second_row)
    with pytest.raises(RuntimeError, match="second row"):
        run_pipeline(cfg, stages=["compare"])
    monkeypatch.setattr(runner, "evaluate_model", real)


def test_an_interrupted_compare_continues_after_its_finished_rows(prepared, tmp_path, tiny_concept_path, trainings,
                                                                  monkeypatch):
    cfg = _cfg(prepared, tmp_path, tiny_concept_path, seeds=1, variants=["causal", "random_same_layers", "ga"])
    _killed_during_the_second_row(cfg, monkeypatch)
    assert read_done(cfg.run_dir, "compare") is None and not (cfg.run_dir / "compare").exists()
    staged = read_json(cfg.run_dir / ".staging" / "compare" / "compare" / "compare.json")
    assert _rows(staged) == [("causal", 0)] and not staged["complete"]
    first = staged["variants"]["causal"]["rows"][0]

    import agmask.stages.mask as mask_stage

    monkeypatch.setattr(mask_stage, "causal_selection", lambda *a, **k: pytest.fail("the causal selection ran again"))
    trainings.clear()
    run_pipeline(cfg, stages=["compare"])
    assert trainings == [("masked_lora", 0), ("ga", 0)]  # the finished row is kept, the other two train
    data = read_json(cfg.run_dir / "compare" / "compare.json")
    assert _rows(data) == [("causal", 0), ("random_same_layers", 0), ("ga", 0)] and data["complete"]
    assert data["variants"]["causal"]["rows"][0] == first
    assert "compare/causal/seed0/metrics.json" in read_done(cfg.run_dir, "compare")["outputs"]


def test_an_interrupted_compare_keeps_its_rows_when_the_variants_change(prepared, tmp_path, tiny_concept_path,
                                                                       trainings, monkeypatch):
    cfg = _cfg(prepared, tmp_path, tiny_concept_path, seeds=2, variants=["saliency", "random_same_layers"])
    _killed_during_the_second_row(cfg, monkeypatch)
    trainings.clear()  # fewer seeds, another variant list: the finished row is kept
    run_pipeline(_cfg(prepared, tmp_path, tiny_concept_path, seeds=1, variants=["saliency", "unmasked"]),
                 stages=["compare"])
    assert trainings == [("masked_lora", 0)]  # only unmasked trains
    assert _rows(read_json(cfg.run_dir / "compare" / "compare.json")) == [("saliency", 0), ("unmasked", 0)]


def test_adding_a_variant_trains_only_the_new_one_and_force_retrains_all(prepared, tmp_path, tiny_concept_path,
                                                                         trainings):
    run_pipeline(_cfg(prepared, tmp_path, tiny_concept_path, seeds=1, variants=["saliency"]), stages=["compare"])
    before = read_json(tmp_path / "run" / "compare" / "compare.json")["variants"]["saliency"]["rows"][0]
    trainings.clear()
    run_pipeline(_cfg(prepared, tmp_path, tiny_concept_path, seeds=1, variants=["saliency", "random_layers"]),
                 stages=["compare"])
    assert trainings == [("masked_lora", 0)]
    data = read_json(tmp_path / "run" / "compare" / "compare.json")
    assert data["variants"]["saliency"]["rows"][0] == before and (tmp_path / "run" / "compare" / "saliency").is_dir()
    trainings.clear()
    run_pipeline(_cfg(prepared, tmp_path, tiny_concept_path, seeds=1, variants=["saliency"], steps=3),
                 stages=["compare"])  # another setting: nothing kept
    assert trainings == [("masked_lora", 0)]
    trainings.clear()
    run_pipeline(_cfg(prepared, tmp_path, tiny_concept_path, force=True, seeds=1, variants=["saliency"], steps=3),
                 stages=["compare"])
    assert trainings == [("masked_lora", 0)]


def test_compare_options_are_checked_before_anything_runs(prepared, tmp_path, tiny_concept_path, capsys):
    with pytest.raises(AgmaskError, match="did you mean causal"):
        run_pipeline(_cfg(prepared, tmp_path, tiny_concept_path, variants=["causl"]), stages=["compare"])
    with pytest.raises(AgmaskError, match="unknown metric 'locallity' \\(did you mean locality"):
        run_pipeline(_cfg(prepared, tmp_path, tiny_concept_path, metrics=["locallity"]), stages=["compare"])
    with pytest.raises(AgmaskError, match="listed twice"):
        run_pipeline(_cfg(prepared, tmp_path, tiny_concept_path, variants=["ga", "ga"]), stages=["compare"])
    with pytest.raises(AgmaskError, match="quant_schemes"):
        run_pipeline(_cfg(prepared, tmp_path, tiny_concept_path, quant_schemes=["int3"]), stages=["compare"])
    assert not (tmp_path / "run" / "compare").exists()
    assert main(["compare", "--help"]) == 0
    text = capsys.readouterr().out
    assert "3-4 hours" in text and "random_layers" in text and "relearn_steps" in text


def test_a_run_dir_without_its_mask_is_a_one_line_error(tmp_path, tiny_concept_path, capsys):
    code = main(["compare", "--model", "tiny:llama", "--concept", str(tiny_concept_path), "--run-dir",
                 str(tmp_path / "run"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "needs stage" in err and "Traceback" not in err and err.count("\n") == 1


def test_compare_s_input_hash_covers_the_options_it_reads_from_other_stages(prepared, tmp_path, tiny_concept_path):
    from agmask.currency import input_parts, recorded_inputs, stale_reason

    cfg = _cfg(prepared, tmp_path, tiny_concept_path)

    def parts(**stage_options):
        overrides = {**cfg.overrides, **{k: {**cfg.overrides.get(k, {}), **v} for k, v in stage_options.items()}}
        return input_parts(Session.create(cfg.model_copy(update={"overrides": overrides})), "compare")

    base = parts()
    for changed in ({"unlearn": {"lr": 1e-3}}, {"evaluate": {"bootstrap_seed": 3}}, {"mask": {"candidates": 64}}):
        other = parts(**changed)
        assert other != base and other["options_of"] != base["options_of"], changed
        assert "the options it reads from other stages changed" in stale_reason({"inputs": recorded_inputs(base)}, other)
    assert parts(similarity={"permutations": 19}) == base  # a stage it does not read


def test_a_new_way_to_score_answers_redoes_the_stages_that_score_and_not_training(prepared, tmp_path,
                                                                                   tiny_concept_path, monkeypatch):
    from agmask import currency

    cfg = _cfg(prepared, tmp_path, tiny_concept_path)
    session = Session.create(cfg)
    causal = Session.create(cfg.model_copy(update={"overrides": {**cfg.overrides, "mask": {"selection": "causal"}}}))
    names = ("baseline", "attribute", "mask", "ablate", "compare")
    before = {name: currency.input_parts(session, name) for name in names}
    causal_before = currency.input_parts(causal, "mask")
    monkeypatch.setattr(currency, "SCORING_VERSION", currency.SCORING_VERSION + 1)
    after = {name: currency.input_parts(session, name) for name in before}
    # attribution, the mask by score and training score no answer; a causal mask measures answer log-probs
    assert after["attribute"] == before["attribute"] and after["mask"] == before["mask"]
    assert currency.input_parts(causal, "mask") != causal_before
    for name in ("baseline", "ablate", "compare"):
        assert after[name] != before[name]
        why = currency.stale_reason({"inputs": currency.recorded_inputs(before[name])}, after[name])
        assert "the way answers are scored changed" in why
