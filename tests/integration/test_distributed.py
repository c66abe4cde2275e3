"""Data parallel for real: a 2-process CPU job (gloo) against the same stages in one process.

`accelerate launch --multi_gpu --num_processes 2` with `Accelerator(cpu=True)` starts two processes
(`--cpu --num_processes 2` would start one): the job writes the world size each process sees, and
its attribution scores, adapter and evaluation numbers must equal the one-process run's.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import agmask
from agmask.config import RunConfig
from agmask.files import load_tensors, read_json, read_jsonl
from agmask.pipeline import run_pipeline

pytestmark = pytest.mark.distributed

JOB = Path(__file__).with_name("distributed_job.py")
STAGES = ["baseline", "attribute", "mask", "unlearn", "evaluate"]
OVERRIDES = {
    "baseline": {"generation_tokens": 4},
    "attribute": {"batch_size": 3},  # 4 forget prompts: 2 per process, batches of different widths
    "mask": {"k": 12, "num_layers": 2},
    # 2 forget + 2 retain prompts and 1 recommend prompt (packed with its candidates) per process and step
    "unlearn": {"steps": 3, "batch_size": 4, "recommend_weight": 1.0, "preference_weight": 1.0, "recommend_batch_size": 2},
    "evaluate": {"metrics": ["forget_efficacy", "locality", "kl_greedy", "general_text"], "generation_tokens": 4,
                 "corpus_tokens": 96, "corpus_window": 32},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path: Path, run_dir: Path, concept: Path, processes: int) -> subprocess.CompletedProcess:
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"run_dir": str(run_dir), "model": "tiny:llama", "concept": str(concept),
                               "stages": STAGES, "overrides": OVERRIDES, "out": str(tmp_path / "ranks")}))
    src = str(Path(agmask.__file__).resolve().parents[1])  # this checkout's package, first on the path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(JOB), str(job)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    """Equal up to float reordering: every entry within `rel` of the tensor's largest entry."""
    scale = max(b.abs().max().item(), 1e-12)
    assert (a - b).abs().max().item() <= rel * scale, (a - b).abs().max().item() / scale


def _close_norm(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    """||a - b|| <= rel ||b||. For trained weights: AdamW's first updates are ~lr * sign(g), so an entry
    whose gradient is near zero turns float-reordering noise in g into a visible (still tiny) change."""
    assert (a - b).norm().item() <= rel * max(b.norm().item(), 1e-12), (a - b).norm().item() / b.norm().item()


def test_two_processes_give_the_one_process_scores_adapter_and_metrics(tmp_path, tiny_concept_path):
    two = tmp_path / "two"
    done = _launch(tmp_path, two, tiny_concept_path, processes=2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [read_json(p) for p in sorted((tmp_path / "ranks").glob("rank*.json"))]
    assert [(r["rank"], r["world_size"], r["backend"]) for r in ranks] == [(0, 2, "gloo"), (1, 2, "gloo")]

    one = tmp_path / "one"
    run_pipeline(RunConfig(model="tiny:llama", concepts=[str(tiny_concept_path)], run_dir=one, overrides=OVERRIDES),
                 stages=STAGES)

    # the same artefacts, written once (the second process wrote only into its throwaway mirror)
    files = {d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()) for d in (one, two)}
    assert files[one] == files[two]

    # attribution: all-reduced sums of the two halves = the one-process sums
    s1, s2 = load_tensors(one / "attribute" / "scores.safetensors"), load_tensors(two / "attribute" / "scores.safetensors")
    for key in ("forget.saliency", "forget.fisher", "retain.saliency", "retain.fisher"):
        _close(s2[key], s1[key])
    assert torch.equal(load_tensors(one / "mask" / "mask.safetensors")["mask"],
                       load_tensors(two / "mask" / "mask.safetensors")["mask"])

    # training: sharded batches + all-reduced gradients = the one-process update
    a1 = load_tensors(one / "adapters" / "tinyfilm" / "adapter_model.safetensors")
    a2 = load_tensors(two / "adapters" / "tinyfilm" / "adapter_model.safetensors")
    assert a1.keys() == a2.keys()
    for key in a1:
        _close_norm(a2[key], a1[key])
    log1, log2 = read_jsonl(one / "unlearn" / "log.jsonl"), read_jsonl(two / "unlearn" / "log.jsonl")
    assert "preference_kl" in log1[0]
    for r1, r2 in zip(log1, log2):  # logged terms are the whole batch's, not one shard's
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-5, abs=1e-6)
        assert r2["preference_kl"] == pytest.approx(r1["preference_kl"], rel=1e-4, abs=1e-6)

    # evaluation: sharded scoring, gathered in order
    m1, m2 = read_json(one / "eval" / "metrics.json")["metrics"], read_json(two / "eval" / "metrics.json")["metrics"]
    assert m1.keys() == m2.keys()
    for name in ("forget_efficacy", "locality"):
        for side in ("base", "adapted"):
            assert m2[name][side]["mean_answer_logprob"] == pytest.approx(m1[name][side]["mean_answer_logprob"], rel=1e-5)
    for set_name, v in m1["kl_greedy"]["sets"].items():
        assert m2["kl_greedy"]["sets"][set_name]["tokens"] == v["tokens"]
        # KL of two nearly equal distributions: float noise in the log-probs is absolute, not relative
        assert m2["kl_greedy"]["sets"][set_name]["mean_kl_per_token"] == pytest.approx(v["mean_kl_per_token"],
                                                                                       rel=1e-4, abs=1e-7)
    assert m2["general_text"]["adapted_perplexity"] == pytest.approx(m1["general_text"]["adapted_perplexity"], rel=1e-5)
