"""The real embedded models (marked slow; they run in CI too, offline).

- the default Qwen model: first load joins, verifies, dequantises and caches; the cached load is
  fast; the model knows the concept by the multiple-choice measure.
- SmolLM2-135M: the whole pipeline, every stage, on the shipped concept with small demo settings.
"""
from __future__ import annotations

import time

import pytest

from agmask.concepts import load_concept
from agmask.config import RunConfig
from agmask.files import read_json, read_jsonl
from agmask.models import load
from agmask.perturb import FAMILIES, ORIGINAL
from agmask.pipeline import STAGES, read_done, run_pipeline
from agmask.scoring import score_items

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = {  # the demo budget, smaller still: this is a test of the wiring on a real model, not a result
    "baseline": {"max_items": 4},
    "perturb": {"base_prompts": 2, "samples": 1},
    "probe": {"max_items": 6},
    "attribute": {"max_items": 8},
    "unlearn": {"steps": 4},
    "evaluate": {"max_items": 4, "corpus_tokens": 256, "relearn_steps": 2},
}


@pytest.mark.slow
def test_default_model_loads_caches_and_knows_the_concept(agmask_home):
    start = time.perf_counter()
    model, tok, info = load("embedded:qwen2.5-coder-0.5b-instruct")
    first = time.perf_counter() - start
    assert (info.num_layers, info.intermediate_size, info.hidden_size) == (24, 4864, 896)
    assert 600e6 < info.num_parameters < 660e6  # untied lm_head from the GGUF: ~630M
    assert (agmask_home / "models" / "qwen2.5-coder-0.5b-instruct" / "agmask-source.json").is_file()
    start = time.perf_counter()
    load("embedded:qwen2.5-coder-0.5b-instruct")
    assert time.perf_counter() - start < first  # the cache is used
    spec = load_concept("inception").spec
    rows = score_items(model, tok, spec, "forget_eval")  # the claim is about the whole set (39/48 measured)
    chance = 1 / len(spec.candidates)
    assert sum(r.mc_share for r in rows) / len(rows) > 3 * chance
    assert sum(r.mc_top1 for r in rows) > len(rows) / 2


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory):
    cfg = RunConfig(model="embedded:smollm2-135m-instruct", concepts=["inception"], budget="demo",
                    run_dir=tmp_path_factory.mktemp("smollm2") / "run", overrides=SMALL)
    run_pipeline(cfg)
    return cfg.run_dir


@pytest.mark.slow
def test_every_stage_runs_on_smollm2(smollm2_run):
    for stage in STAGES:
        assert read_done(smollm2_run, stage) is not None, stage
    metrics = read_json(smollm2_run / "eval" / "metrics.json")["metrics"]
    assert {"forget_efficacy", "locality", "attack_quantization", "attack_relearn"} <= set(metrics)
    assert "<img" in (smollm2_run / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_perturb_and_similarity_on_smollm2(smollm2_run):
    stab = read_json(smollm2_run / "perturb" / "stability.json")
    assert set(FAMILIES) | {ORIGINAL, "language_fr", "language_es", "language_de"} == set(stab["families"])
    rows = read_jsonl(smollm2_run / "perturb" / "outputs.jsonl")
    assert len(rows) == stab["overall"]["n_outputs"] and all(r["answer_logprob"] < 0 for r in rows)
    sim = read_json(smollm2_run / "similarity" / "similarity.json")
    assert sim["num_layers"] == read_json(smollm2_run / "probe" / "keys.json")["num_layers"]
    assert all(d["rsa"] is not None for d in sim["layers"]["mlp"])
    for png in ("perturb/stability.png", "perturb/answers_heatmap.png", "perturb/examples.png",
                "similarity/matrices.png", "similarity/rsa_layers.png", "attribute/layer_sensitivity.png",
                "unlearn/loss.png"):
        assert (smollm2_run / png).read_bytes()[:8] == PNG_MAGIC, png
