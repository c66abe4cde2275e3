"""The driver under faults, end to end on a tiny model: kill -9 in the middle of a stage (a real subprocess),
and the default mask on a tiny model (a strict subset, so every tiny run exercises the masking)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import agmask
from agmask import pipeline
from agmask.config import RunConfig
from agmask.files import load_tensors, read_json
from agmask.lora import load_adapter, merged_delta
from agmask.models import load
from agmask.session import Session
from runkit import copy_run, fast_args, number_differences, snapshot

SRC = str(Path(agmask.__file__).resolve().parents[1])  # this checkout's package, first on the path


@pytest.fixture
def finished(finished_tiny_run):
    return finished_tiny_run.cfg  # the session's one finished tiny run: copied before any change


def _agmask(*args) -> list[str]:
    return [sys.executable, "-m", "agmask.cli.main", *map(str, args)]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _kill_when(cmd: list[str], ready, timeout: float = 120) -> None:
    """Start `cmd`, wait until `ready()` holds, then kill -9 it (it must still be running)."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "never got ready"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _metrics(run_dir: Path) -> dict:
    """eval/metrics.json's metrics without timings."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "seconds"}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return strip(read_json(run_dir / "eval" / "metrics.json")["metrics"])


def _count_metrics(path: Path) -> int:
    try:
        return len(read_json(path)["metrics"])
    except (OSError, ValueError, KeyError):
        return 0


def test_kill_9_during_evaluate_keeps_the_old_evaluation_and_the_rerun_resumes(finished, tmp_path):
    run = copy_run(finished, tmp_path / "killed")
    reference = copy_run(finished, tmp_path / "reference")
    cmd = ["evaluate", "-q", *fast_args(), "--set", "evaluate.relearn_steps=3"]
    before = snapshot(run.run_dir)
    staged = run.run_dir / ".staging" / "evaluate" / "eval" / "metrics.json"
    _kill_when(_agmask(*cmd, "--run-dir", run.run_dir), lambda: _count_metrics(staged) >= 2)
    assert snapshot(run.run_dir) == before  # eval/, its DONE and report.html as they were
    partial = read_json(staged)["metrics"]
    _run(_agmask(*cmd, "--run-dir", run.run_dir))
    resumed = read_json(run.run_dir / "eval" / "metrics.json")["metrics"]
    first = next(iter(partial))
    assert resumed[first]["seconds"] == partial[first]["seconds"]  # kept from before the kill, not recomputed
    _run(_agmask(*cmd, "--run-dir", reference.run_dir))
    # same numbers as an uninterrupted run (to float rounding: the resumed run caches other prompt prefixes)
    assert number_differences(_metrics(run.run_dir), _metrics(reference.run_dir)) == []
    assert not (run.run_dir / ".staging" / "evaluate").exists()


def test_kill_9_during_unlearn_keeps_the_old_adapter_and_the_rerun_finishes(finished, tmp_path):
    run = copy_run(finished, tmp_path / "killed")
    cmd = ["unlearn", "-q", *fast_args(), "--set", "unlearn.steps=8"]
    before = snapshot(run.run_dir)
    _kill_when(_agmask(*cmd, "--run-dir", run.run_dir),
               lambda: (run.run_dir / ".staging" / "unlearn" / "unlearn").is_dir())
    assert snapshot(run.run_dir) == before
    _run(_agmask(*cmd, "--run-dir", run.run_dir))
    assert len((run.run_dir / "unlearn" / "log.jsonl").read_text().splitlines()) == 8
    assert pipeline.read_done(run.run_dir, "evaluate") is None  # built on the old adapter: stale now


def test_a_tiny_run_with_the_default_mask_trains_a_strict_subset(tmp_path, tiny_concept_path):
    """On tiny:llama (3 layers x 80 neurons) the default mask used to select all 240 neurons, so tiny runs
    trained an unmasked adapter. Now k is capped at a quarter of the selected layers' neurons, and the
    trained adapter's merged delta is non-zero inside the mask and exactly zero outside."""
    cfg = RunConfig(model="tiny:llama", concepts=[str(tiny_concept_path)], run_dir=tmp_path / "run",
                    overrides={"unlearn": {"steps": 3, "batch_size": 2}})
    session = Session.create(cfg)
    pipeline.check_manifest(session)
    for stage in ("attribute", "mask", "unlearn"):
        pipeline.run_stage(session, stage)
    info = read_json(cfg.run_dir / "mask" / "mask.json")
    assert info["k"] == 60 and info["selected"] == 60 and info["layers"] == [0, 1, 2]
    mask = load_tensors(cfg.run_dir / "mask" / "mask.safetensors")["mask"]
    assert 0 < int(mask.sum()) < mask[info["layers"]].numel()
    model, _, _ = session.model()  # the session's model after every stage: no hook left on it
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    assert not any(p._backward_hooks for p in model.parameters())
    adapter = load_adapter(load("tiny:llama")[0], cfg.run_dir / "adapters" / "tinyfilm", name="tinyfilm")
    assert torch.equal(adapter.mask, mask)
    inside = 0
    for layer in adapter.layers:
        keep = mask[layer]
        for which in ("gate", "up"):
            delta = merged_delta(adapter.model, layer, which, "tinyfilm")
            assert torch.count_nonzero(delta[~keep]) == 0
            inside += int(torch.count_nonzero(delta[keep]))
        delta = merged_delta(adapter.model, layer, "down", "tinyfilm")
        assert torch.count_nonzero(delta[:, ~keep]) == 0
        inside += int(torch.count_nonzero(delta[:, keep]))
    assert inside > 0
    assert json.loads((cfg.run_dir / "adapters" / "tinyfilm" / "adapter_config.json").read_text())["r"] == 8
