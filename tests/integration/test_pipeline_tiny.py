"""The whole pipeline on a tiny model: every stage's artefacts, resume, incremental mode."""
from __future__ import annotations

import pytest
import torch
from peft import PeftModel

from agmask.config import RunConfig
from agmask.files import load_tensors, read_json, read_jsonl
from agmask.models import load
from agmask.pipeline import STAGES, read_done, run_pipeline, run_stage
from agmask.session import Session
from runkit import one_torch_thread

FAST = {"unlearn": {"steps": 3, "batch_size": 2}, "mask": {"k": 12, "num_layers": 2}}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_concept_path):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = RunConfig(model="tiny:qwen2", concepts=[str(tiny_concept_path)], run_dir=run_dir, overrides=FAST)
    with one_torch_thread():  # set up before the per-test fixture that does it
        run_pipeline(cfg)
    return cfg


def test_every_stage_is_done_with_its_canonical_artefacts(finished_run):
    run_dir = finished_run.run_dir
    for stage in STAGES:
        assert read_done(run_dir, stage) is not None, stage
    for rel in ["manifest.json", "baseline/answers.jsonl", "baseline/summary.json",
                "probe/activations.safetensors", "probe/keys.json",
                "attribute/scores.safetensors", "attribute/layers.json", "attribute/layer_sensitivity.png",
                "mask/mask.safetensors", "mask/mask.json",
                "adapters/tinyfilm/adapter_config.json", "adapters/tinyfilm/adapter_model.safetensors",
                "adapters/tinyfilm/mask.safetensors", "unlearn/log.jsonl", "unlearn/summary.json", "unlearn/loss.png"]:
        assert (run_dir / rel).is_file(), rel


def test_shapes_follow_the_model(finished_run):
    run_dir = finished_run.run_dir
    _, _, info = load("tiny:qwen2")
    for key, value in load_tensors(run_dir / "attribute" / "scores.safetensors").items():
        assert value.shape == (info.num_layers, info.intermediate_size), key
    masks = load_tensors(run_dir / "mask" / "mask.safetensors")
    assert masks["mask"].dtype == torch.bool and int(masks["mask"].sum()) == 12
    assert torch.equal(masks["random"].sum(1), masks["mask"].sum(1))
    assert len(read_jsonl(run_dir / "unlearn" / "log.jsonl")) == 3


def test_a_rerun_skips_every_stage(finished_run):
    session = Session.create(finished_run)
    assert not any(run_stage(session, stage) for stage in STAGES)
    assert session._loaded is None  # nothing to do: the model was never loaded


def test_the_adapter_loads_with_plain_peft(finished_run):
    model, tok, _ = load("tiny:qwen2")
    peft_model = PeftModel.from_pretrained(model, str(finished_run.run_dir / "adapters" / "tinyfilm"))
    ids = torch.tensor([tok("hello")["input_ids"]])
    with peft_model.disable_adapter():
        base = peft_model(ids).logits
    assert not torch.equal(peft_model(ids).logits, base)


def test_changing_a_mask_option_reruns_mask_and_unlearn_only(finished_run, tmp_path):
    cfg = finished_run.model_copy(update={"overrides": {**FAST, "mask": {"k": 8, "num_layers": 2}}})
    session = Session.create(cfg)
    ran = {stage: run_stage(session, stage) for stage in STAGES}
    assert ran == {s: s in ("mask", "unlearn") + tuple(STAGES[STAGES.index("unlearn") + 1:]) for s in STAGES}
    # and back: the original options redo them again (artefacts follow the options)
    session = Session.create(finished_run)
    assert run_stage(session, "mask") is True


def test_incremental_mode_stacks_adapters_and_writes_a_regression_table(tmp_path, tiny_concept_path):
    second = tiny_concept_path.parent / "tiny_concept2.yaml"
    # the baseline scores a subset of each set (as the demo preset does): the regression uses those items
    subset = {**FAST, "baseline": {**FAST.get("baseline", {}), "max_items": 2}}
    cfg = RunConfig(model="tiny:llama", concepts=[str(tiny_concept_path), str(second)], run_dir=tmp_path / "inc",
                    overrides=subset)
    run_dirs = run_pipeline(cfg)
    assert [d.name for d in run_dirs] == ["tinyfilm", "tinypark"]
    second_manifest = read_json(tmp_path / "inc" / "tinypark" / "manifest.json")
    assert second_manifest["prior_adapters"] == [str(tmp_path / "inc" / "tinyfilm" / "adapters" / "tinyfilm")]
    regression = read_json(tmp_path / "inc" / "regression.json")
    assert [(r["after"], r["concept"]) for r in regression] == [
        ("tinyfilm", "tinyfilm"), ("tinypark", "tinyfilm"), ("tinypark", "tinypark")]
    assert all(r["forget_eval"]["base_known_n"] <= 2 for r in regression)
    for r in regression:  # locality twice here too: the scored neighbours split into anchored and unseen
        nb = r["neighbors"]
        assert nb["anchored_n"] + nb["unseen_n"] == 2 and nb["unseen_mean_abs_logprob_change"] is not None
    assert read_json(tmp_path / "inc" / "manifest.json")["concepts"] == [str(tiny_concept_path), str(second)]


def test_recommendation_sets_run_end_to_end_on_tiny_llama(finished_tiny_run, capsys):
    """Issue 17: recommend_eval through perturb, evaluate, the report and the CLI summary (demo presets), on the
    session's finished tiny:llama run of the tiny concept."""
    from agmask.cli.summary import print_eval_summary
    from agmask.concepts import load_concept

    cfg = finished_tiny_run.cfg
    run_dir, spec = cfg.run_dir, load_concept(cfg.concepts[0]).spec
    block = read_json(run_dir / "perturb" / "stability.json")["recommend"]
    assert len(block["per_request"]) == 2 and (run_dir / "perturb" / "recommend_stability.png").is_file()
    metrics = read_json(run_dir / "eval" / "metrics.json")["metrics"]
    rate, pref = metrics["recommendation_rate"], metrics["recommendation_preference"]
    assert rate["n"] == pref["n"] == len(spec.recommend_eval) and rate["samples_per_prompt"] == 8
    assert [len(p["top"]["adapted"]) for p in pref["per_prompt"]] == [3] * pref["n"]
    assert pref["kl_remaining_mean"] >= 0 and 0 <= pref["top_remaining_unchanged"] <= 1
    samples = read_jsonl(run_dir / "eval" / "recommendations.jsonl")
    assert [len(r["adapted"]) for r in samples] == [8] * len(spec.recommend_eval)
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert 'id="recommendations"' in page and spec.recommend_eval[0].prompt in page
    capsys.readouterr()
    print_eval_summary(run_dir)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8 and lines[-2].startswith("recommendations (recommend_eval, n=4)")
    assert lines[-1].startswith("targets met ") and "recommend.top_kept" in lines[-1].split("; not measured:")[0]


def test_the_non_film_concept_runs_end_to_end(tmp_path):
    """The shipped book-series concept through every stage on tiny:llama: unseen neighbours, answer formats,
    the unconstrained attacks and intervals reach the metrics and the report; no prompt says film."""
    import re

    cfg = RunConfig(model="tiny:llama", concepts=["harry-potter"], run_dir=tmp_path / "run", overrides=FAST)
    run = run_pipeline(cfg)[0]
    m = read_json(run / "eval" / "metrics.json")["metrics"]
    loc = m["locality"]
    assert loc["anchored"]["n"] > 0 and loc["unseen"]["n"] > 0 and loc["n"] == loc["anchored"]["n"] + loc["unseen"]["n"]
    assert "unseen.mean_abs_delta_answer_logprob" in loc["intervals"]
    assert set(m["answer_formats"]["formats"]) == {"set_lead", "lead=Answer: ", "letter"}
    assert m["attack_relearn_full"]["variants"] and m["attack_quantization_full"]["variants"]
    for example in m["adversarial"]["examples"].values():
        for row in example:
            assert not re.search(r"film|movie", row["prompt"] + row["lead"], re.IGNORECASE)
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "unseen" in page and "Answer formats" in page and "95% interval" in page
