"""`evaluate_model`: the library entry point of stage 7 (the stage is thin glue around it)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch.nn as nn

from agmask.concepts.schema import ConceptSpec
from agmask.evaluate.config import EvalConfig
from agmask.evaluate.context import EvalContext
from agmask.evaluate.figures import write_figures
from agmask.evaluate.quantize import lora_layers
from agmask.evaluate.registry import load_state, resolve, run_metrics
from agmask.files import read_json, read_jsonl, write_json
from agmask.progress import SILENT, Reporter

METRICS_FILE = "metrics.json"
GENERATIONS_FILE = "generations.jsonl"


def adapter_fingerprint(model: nn.Module) -> str:
    """sha256 of every LoRA tensor (names and values): what distinguishes one adapter from another."""
    h = hashlib.sha256()
    for name, tensor in sorted((n, p) for n, p in model.state_dict().items() if "lora_" in n):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def default_input_hash(model: nn.Module, spec: ConceptSpec, config: EvalConfig, baseline_rows: list[dict] | None) -> str:
    payload = {"config": asdict(config), "concept": spec.model_dump(mode="json"), "adapter": adapter_fingerprint(model),
               "baseline": hashlib.sha256(json.dumps(baseline_rows or [], sort_keys=True).encode()).hexdigest()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def evaluate_model(model: nn.Module, tokenizer, spec: ConceptSpec, config: EvalConfig, out_dir: Path,
                   baseline_rows: list[dict] | None = None, baseline_generation_tokens: int | None = None,
                   input_hash: str | None = None, resume: bool = True, reporter: Reporter = SILENT,
                   header: dict | None = None, adapter=None) -> dict:
    """Compute every metric (or `config.metrics`) comparing `model` (a PeftModel) with itself under
    `disable_adapter()`; writes `out_dir/metrics.json` after each metric, `generations.jsonl` and figures.

    baseline_rows: rows of `baseline/answers.jsonl`, reused as the base model's scores (and its greedy
    replies when `baseline_generation_tokens` equals `config.generation_tokens`).
    input_hash: what the results depend on; a rerun with the same hash resumes (default: a hash of the
    config, the concept, the adapter's tensors and the baseline rows). adapter: the `MaskedAdapter` under
    test (its name and mask), needed by the relearning attack. Returns the metrics file's contents.
    """
    out_dir = Path(out_dir)
    baseline = {(r["set"], r["index"]): r for r in baseline_rows or []}
    ctx = EvalContext(model, tokenizer, spec, config, out_dir, baseline, baseline_generation_tokens, reporter,
                      adapter=adapter)
    if not lora_layers(model):
        reporter.log("evaluate: the model has no LoRA layers; base and adapted are the same model")
    metrics = resolve(config.metrics)
    input_hash = input_hash or default_input_hash(model, spec, config, baseline_rows)
    replies = out_dir / GENERATIONS_FILE
    if "generations" in load_state(out_dir / METRICS_FILE, input_hash, resume)["metrics"] and replies.is_file():
        taken = ctx.reuse_generations(read_jsonl(replies))  # resuming: the replies of the same inputs
        reporter.log(f"evaluate: {taken} reply lists reused from {GENERATIONS_FILE}")
    info = {"concept": spec.name, "config": asdict(config), "adapter_sha256": adapter_fingerprint(model),
            "base_scores_from_baseline": bool(baseline_rows), **(header or {})}
    state = run_metrics(ctx, metrics, out_dir / METRICS_FILE, input_hash, resume=resume, header=info)
    state["figures"] = write_figures(state["metrics"], out_dir)
    write_json(out_dir / METRICS_FILE, state)
    return read_json(out_dir / METRICS_FILE)  # exactly what is on disk (tuples become lists)
