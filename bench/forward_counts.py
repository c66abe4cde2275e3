"""Where the pipeline's compute goes, without a wall clock: model forward calls and the tokens they process,
per stage and per evaluation metric, counted through hooks on the model.

    python bench/forward_counts.py [--model tiny:llama] [--concept inception] [--budget demo]
                                   [--stages baseline,perturb,...] [--set STAGE.OPTION=VALUE] [--tasks]
                                   [--json out.json]
    python bench/forward_counts.py --diff BEFORE.json AFTER.json   # two --json outputs side by side

On a machine shared with other jobs a wall clock measures the neighbours; these counts are deterministic
(the same code and inputs give the same numbers) and proportional to the work. Per row:

- calls: forward passes of the decoder body (a generation step is one call);
- prefill: tokens of calls that process more than one position (scoring, prompt prefill, KL, perplexity),
  as batch x length (padding costs compute too);
- decode: tokens of one-position calls (generation steps: one per sequence per step);
- train: tokens of calls under autograd (unlearning, relearning attacks; a backward follows each);
- repeated: prefill tokens of calls whose exact inputs (ids, positions, the cached keys they start from)
  already ran in this run on the same model state (same weights, same adapters enabled; the base model is
  the same with every adapter disabled): work that could have been reused;
- head rows: positions the lm_head ran on (the vocabulary projection is ~27% of a 0.5B model per position);
- cpu_s: this process's CPU seconds (with --threads 1, close to the compute time even on a busy machine; the
  one figure here that is not deterministic).

Tokens count layer by layer and are given in full-model equivalents (layer tokens / layers), so a
forward that skips frozen layers (the trainer's shortcut) counts what it computes. Prints figures only;
nothing here is a pass/fail test.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn

from benchkit import add_run_options, open_session

FIELDS = ("calls", "prefill", "decode", "train", "repeated", "head_rows", "cpu_s")
METRIC_DONE = re.compile(r"^metric (\S+): ")  # the evaluation's log line after each metric (registry.run_metrics)


def _model_state(model: nn.Module) -> tuple:
    """What distinguishes one model state from another: a strided sample of the base weights' values (a weight
    swap changes them; storage addresses are reused, so they cannot tell), and of the LoRA weights when a LoRA
    layer is enabled (with every adapter disabled, the model computes what the plain base model does)."""
    enabled = any(hasattr(m, "lora_A") and m.lora_A and not m.disable_adapters for m in model.modules())
    with torch.no_grad():
        sample = tuple(float(p.detach().reshape(-1)[::997].double().sum()) for n, p in model.named_parameters()
                       if enabled or "lora_" not in n)
    return sample, enabled


def _digest(tensor: torch.Tensor | None) -> str | None:
    return None if tensor is None else hashlib.sha1(tensor.detach().float().cpu().numpy().tobytes()).hexdigest()


def _cache_digest(cache) -> str | None:
    """What a call starts from: the first layer's cached keys (the same tokens after another prefix differ)."""
    layers = getattr(cache, "layers", None)
    keys = getattr(layers[0], "keys", None) if layers else None
    return None if keys is None or not keys.numel() else _digest(keys)


class ForwardCounter:
    """Counts forward work on one CausalLM (or a PEFT model around it) under the current `label`.

    `counts[label][field]` for FIELDS; the label is what the caller says is running now (a stage, a metric,
    a progress task)."""

    def __init__(self, model: nn.Module):
        from agmask.models.arch import base_causal_lm, decoder_layers

        self.model = model
        self.causal_lm = base_causal_lm(model)
        self.body = getattr(self.causal_lm, self.causal_lm.base_model_prefix)
        self.layers = list(decoder_layers(model))
        self.head = self.causal_lm.get_output_embeddings()
        self.hidden = self.causal_lm.config.hidden_size
        self._label = "(unlabelled)"
        self._since = time.process_time()
        self.counts: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0))
        self._seen: set[tuple] = set()
        self._kind = "prefill"
        self._repeated = False

    @property
    def label(self) -> str:
        return self._label

    @label.setter
    def label(self, value: str) -> None:
        """Charge the CPU time since the last change to the old label, then switch."""
        self.flush()
        self._label = value

    def flush(self) -> None:
        """Charge the CPU time since the last flush to the current label."""
        now = time.process_time()
        self.counts[self._label]["cpu_s"] += now - self._since
        self._since = now

    def _on_body(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        shape = tuple(ids.shape if ids is not None else embeds.shape[:2])  # (B, T)
        row = self.counts[self.label]
        row["calls"] += 1
        if torch.is_grad_enabled():
            self._kind, self._repeated = "train", False
            return
        self._kind = "decode" if shape[1] == 1 else "prefill"
        self._repeated = False
        if self._kind == "prefill" and ids is not None:
            key = (_digest(ids), _digest(kwargs.get("position_ids")), _cache_digest(kwargs.get("past_key_values")),
                   _model_state(self.model))
            self._repeated = key in self._seen
            self._seen.add(key)

    def _on_layer(self, module, args, kwargs) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        tokens = hidden.shape[0] * hidden.shape[1] / len(self.layers)  # full-model equivalents
        row = self.counts[self.label]
        row[self._kind] += tokens
        if self._repeated:
            row["repeated"] += tokens

    def _on_head(self, module, args) -> None:
        self.counts[self.label]["head_rows"] += args[0].numel() // self.hidden

    @contextmanager
    def attached(self) -> Iterator["ForwardCounter"]:
        """The counting hooks, registered for the block and removed in `finally`."""
        handles = [self.body.register_forward_pre_hook(self._on_body, with_kwargs=True),
                   self.head.register_forward_pre_hook(self._on_head)]
        try:
            handles += [layer.register_forward_pre_hook(self._on_layer, with_kwargs=True) for layer in self.layers]
            yield self
        finally:
            for h in handles:
                h.remove()


def make_reporter(counter: ForwardCounter, stage: str, tasks: bool):
    """A silent Reporter that labels the counter: `stage/metric` when the evaluation logs a finished metric
    (the counts since the previous one are that metric's), `stage/metric/task` per progress task with --tasks."""
    from agmask.progress import Reporter

    class LabellingReporter(Reporter):
        def __init__(self):
            super().__init__(enabled=False)
            self.pending: dict[str, dict[str, float]] = {}

        def log(self, message: str) -> None:
            done = METRIC_DONE.match(message)
            if done:  # everything counted since the last metric belongs to this one
                self._move(f"{stage}/{done.group(1)}")

        def _move(self, target: str) -> None:
            counter.flush()
            for label in [k for k in counter.counts if k.startswith(f"{stage}/(pending)")]:
                rest = label.removeprefix(f"{stage}/(pending)")
                into = counter.counts[target + rest]
                for f, v in counter.counts.pop(label).items():
                    into[f] += v
            counter._label = f"{stage}/(pending)"

        @contextmanager
        def task(self, description: str, total: int):
            outer = counter.label
            if tasks:
                counter.label = f"{outer}/{description}"
            try:
                yield lambda n=1: None
            finally:
                counter.label = outer

    return LabellingReporter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(ap, "tiny:llama", default_threads=1)
    ap.add_argument("--tasks", action="store_true", help="also count per progress task inside stages and metrics")
    ap.add_argument("--json", type=Path, default=None, help="also write the counts as JSON here")
    ap.add_argument("--diff", type=Path, nargs=2, metavar=("BEFORE", "AFTER"), help="compare two --json outputs")
    args = ap.parse_args()
    if args.diff:
        print_diff(*(json.loads(p.read_text())["counts"] for p in args.diff))
        return

    from agmask.pipeline import run_stage, write_manifest

    session, stages, tmp = open_session(args, "agmask-counts-")
    write_manifest(session)
    model = session.model()[0]
    counter = ForwardCounter(model)
    with counter.attached():
        for name in stages:
            session.reporter = make_reporter(counter, name, args.tasks)
            counter.label = f"{name}/(pending)"
            print(f"  {name} ...", file=sys.stderr, flush=True)
            run_stage(session, name)
            session.reporter._move(name)  # what no metric claimed is the stage's own
        counter.label = "(unlabelled)"
    rows = {label: {f: round(v, 1) if f == "cpu_s" else round(v) for f, v in row.items()}
            for label, row in counter.counts.items()
            if label != "(unlabelled)" and (row["cpu_s"] >= 0.05 or any(row[f] for f in FIELDS if f != "cpu_s"))}
    print_table(rows, args.model, args.budget)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "budget": args.budget, "concept": args.concept,
                                         "counts": rows}, indent=2))
    if tmp is not None:
        tmp.cleanup()


def print_table(rows: dict[str, dict[str, int]], model: str, budget: str) -> None:
    width = max([len(k) for k in rows] + [10])
    header = f"{'stage/metric':<{width}} " + " ".join(f"{f:>10}" for f in FIELDS)
    print(f"\nforward work on {model}, --budget {budget} (tokens in full-model equivalents)")
    print(header)
    print("-" * len(header))
    stages: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0))
    for label, row in rows.items():
        print(f"{label:<{width}} " + _cells(row))
        for f in FIELDS:
            stages[label.split("/")[0]][f] += row[f]
    print("-" * len(header))
    for stage, row in stages.items():
        print(f"{stage + ' (all)':<{width}} " + _cells(row))
    total = {f: sum(r[f] for r in stages.values()) for f in FIELDS}
    print(f"{'total':<{width}} " + _cells(total))


def print_diff(before: dict[str, dict], after: dict[str, dict]) -> None:
    """Per stage/metric (and per stage): calls, prefill, decode, train and head rows, before -> after."""
    fields = ("calls", "prefill", "decode", "train", "head_rows")

    def totals(rows: dict[str, dict]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for label, row in rows.items():
            stage = label.split("/")[0]
            for key in ([label, f"{stage} (all)"] if "/" in label else [f"{stage} (all)"]):
                into = out.setdefault(key, dict.fromkeys(fields, 0))
                for f in fields:
                    into[f] += row.get(f, 0)
        out["total"] = {f: sum(v[f] for k, v in out.items() if k.endswith(" (all)")) for f in fields}
        return out

    a, b = totals(before), totals(after)
    stages = list(dict.fromkeys(k.split("/")[0].removesuffix(" (all)") for k in [*a, *b] if k != "total"))
    labels = [k for stage in stages for k in dict.fromkeys([*a, *b])
              if k.split("/")[0] == stage and "/" in k] + [f"{stage} (all)" for stage in stages] + ["total"]
    width = max(len(k) for k in labels)
    print(f"{'stage/metric':<{width}} " + " ".join(f"{f:>21}" for f in fields))
    for label in labels:
        x, y = a.get(label, dict.fromkeys(fields, 0)), b.get(label, dict.fromkeys(fields, 0))
        print(f"{label:<{width}} " + " ".join(f"{x[f]:>10} ->{y[f]:>8}" for f in fields))


def _cells(row: dict) -> str:
    return " ".join(f"{row[f]:>10.1f}" if f == "cpu_s" else f"{row[f]:>10}" for f in FIELDS)


if __name__ == "__main__":
    main()
