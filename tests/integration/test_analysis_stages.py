"""perturb and similarity on a real embedded model (SmolLM2-135M) and the shipped concept, demo budget."""
from __future__ import annotations

import pytest

from agmask.config import RunConfig
from agmask.files import read_json, read_jsonl
from agmask.perturb import FAMILIES, ORIGINAL
from agmask.pipeline import read_done, run_pipeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_perturb_and_similarity_on_smollm2(tmp_path):
    cfg = RunConfig(model="embedded:smollm2-135m-instruct", concepts=["inception"], run_dir=tmp_path / "run",
                    budget="demo")
    run_pipeline(cfg, stages=["perturb", "probe", "similarity"])
    run_dir = cfg.run_dir
    for stage in ("perturb", "probe", "similarity"):
        assert read_done(run_dir, stage) is not None
    stab = read_json(run_dir / "perturb" / "stability.json")
    assert set(FAMILIES) | {ORIGINAL, "language_fr", "language_es", "language_de"} == set(stab["families"])
    rows = read_jsonl(run_dir / "perturb" / "outputs.jsonl")
    assert len(rows) == stab["overall"]["n_outputs"] and all(r["answer_logprob"] < 0 for r in rows)
    sim = read_json(run_dir / "similarity" / "similarity.json")
    assert sim["num_layers"] == read_json(run_dir / "probe" / "keys.json")["num_layers"]
    assert all(d["rsa"] is not None for d in sim["layers"]["mlp"])
    for png in ("perturb/stability.png", "perturb/answers_heatmap.png", "perturb/examples.png",
                "similarity/matrices.png", "similarity/rsa_layers.png"):
        assert (run_dir / png).read_bytes()[:8] == PNG_MAGIC, png
