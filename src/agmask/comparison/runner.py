"""One compare row: a variant trained at one seed, evaluated with the evaluate stage's metrics; and compare.json.

compare.json is rewritten after every row, so an interrupted compare loses at most the row that was
running. A row carries the `key` of everything it depends on except which variants and seeds the
comparison lists (model, concept, upstream artefacts, every option); a later run with the same key keeps
it instead of training again.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from agmask.comparison.rows import column_help, metric_columns, summarise
from agmask.comparison.variants import Variant, mask_summary, training_key, variant_mask
from agmask.evaluate import EvalConfig, evaluate_model
from agmask.files import read_json, write_json
from agmask.lora import masked_lora
from agmask.progress import SILENT, Reporter
from agmask.unlearn import get_method
from agmask.unlearn.trainer import train

COMPARE_FILE = "compare.json"
SCHEMA = 1


@dataclass(frozen=True)
class Plan:
    """What every row of one comparison shares."""

    variants: list[Variant]
    seeds: list[int]
    unlearn: object  # the unlearn stage's Config with compare's steps and early stopping off
    evaluate: EvalConfig
    key: str


def row_dir(out_dir: Path, variant: str, seed: int) -> Path:
    """Where a row's evaluation (metrics.json, generations.jsonl, figures) goes."""
    return Path(out_dir) / variant / f"seed{seed}"


def previous_rows(sources: list[Path], key: str) -> dict[tuple[str, int], dict]:
    """Rows of earlier compare.json files made with the same key, by (variant, seed); the first source wins.
    An unreadable file or another schema is skipped."""
    found: dict[tuple[str, int], dict] = {}
    for path in sources:
        try:
            data = read_json(path) if Path(path).is_file() else None
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            continue
        for entry in (data.get("variants") or {}).values():
            for row in entry.get("rows", []):
                if row.get("key") == key:
                    found.setdefault((row["variant"], row["seed"]), row)
    return found


def train_and_evaluate(model, tokenizer, spec, variant: Variant, mask: torch.Tensor | None, layers: list[int], seed: int,
                       plan: Plan, out_dir: Path, baseline_rows: list[dict], baseline_generation_tokens: int,
                       release: Callable, reporter: Reporter = SILENT, device: str = "cpu",
                       gradient_checkpointing: bool = False) -> dict:
    """Train `variant` (its method's loss, LoRA seeded with `seed`, batches in `seed`'s order) on `model`,
    evaluate it into `out_dir`, and hand the PEFT model to `release` (which must unload the LoRA layers),
    also after an error. Returns the row."""
    conf = plan.unlearn
    method = get_method(variant.method)
    with masked_lora(model, mask, layers=layers, r=conf.r, alpha=conf.alpha, name=spec.name, seed=seed) as adapter:
        try:
            start = time.perf_counter()
            log = train(adapter, method, tokenizer, spec, conf, seed=seed, device=device, reporter=reporter,
                        gradient_checkpointing=gradient_checkpointing)
            train_seconds = time.perf_counter() - start
            for p in adapter.model.parameters():
                p.requires_grad_(False)
            start = time.perf_counter()
            # resume=True: an evaluation interrupted mid-way continues when training gave the same adapter
            metrics = evaluate_model(adapter.model.eval(), tokenizer, spec, plan.evaluate, out_dir,
                                     baseline_rows=baseline_rows, baseline_generation_tokens=baseline_generation_tokens,
                                     resume=True, reporter=reporter, adapter=adapter)
            eval_seconds = time.perf_counter() - start
        finally:
            release(adapter.model)
    columns, intervals = metric_columns(metrics["metrics"])
    columns.update(train_seconds=round(train_seconds, 1), eval_seconds=round(eval_seconds, 1), steps_run=len(log))
    final = {k: v for k, v in (log[-1] if log else {}).items() if k not in ("step", "seconds")}
    return {"variant": variant.name, "seed": seed, "key": plan.key, "method": variant.method,
            "mask": mask_summary(mask, layers), "columns": columns, "ci": intervals, "final_terms": final,
            "eval_dir": f"{variant.name}/seed{seed}"}


def run_rows(plan: Plan, selected: dict[str, torch.Tensor], reference: str, rows: dict[tuple[str, int], dict],
             train_row: Callable[[Variant, torch.Tensor | None, list[int], int], dict], on_row: Callable[[], None],
             log: Callable[[str], None] = lambda line: None) -> None:
    """Fill `rows` with every (variant, seed) of the plan not in it yet, in order, calling `on_row` after each.

    train_row(variant, mask, layers, seed) trains and evaluates one row. A row whose training would repeat
    one already in `rows` at the same seed (same `training_key`, e.g. full_layers and unmasked) is a copy of
    it that names it under `same_as`."""
    for variant in plan.variants:
        for seed in plan.seeds:
            if (variant.name, seed) in rows:
                continue
            mask, layers = variant_mask(variant, selected, reference, seed)
            key = training_key(variant.method, mask, layers)
            twin = next((r for r in rows.values() if r["seed"] == seed and r.get("training_key") == key), None)
            if twin is not None:
                log(f"compare: {variant.name}, seed {seed}: the same training as {twin['variant']}, row copied")
                rows[(variant.name, seed)] = {**twin, "variant": variant.name, "same_as": twin["variant"],
                                              "mask": mask_summary(mask, layers)}
            else:
                log(f"compare: {variant.name}, seed {seed} ({len(layers)} layers, "
                    f"{'unmasked' if mask is None else f'{int(mask.sum())} units'})")
                rows[(variant.name, seed)] = {**train_row(variant, mask, layers, seed), "training_key": key}
            on_row()


def document(header: dict, plan: Plan, masks: dict, rows: dict[tuple[str, int], dict]) -> dict:
    """compare.json: settings, the masks, and per variant its rows (in seed order) with mean / sd."""
    variants = {}
    for v in plan.variants:
        mine = [rows[(v.name, s)] for s in plan.seeds if (v.name, s) in rows]
        variants[v.name] = {"method": v.method, "mask": v.mask, "description": v.description, "rows": mine,
                            **summarise(mine)}
    columns = list(dict.fromkeys(c for entry in variants.values() for c in entry.get("mean", {})))
    return {"schema": SCHEMA, **header,
            "settings": {"variants": [v.name for v in plan.variants], "seeds": plan.seeds,
                         "steps": plan.unlearn.steps, "evaluate": asdict(plan.evaluate),
                         "unlearn": {k: v for k, v in asdict(plan.unlearn).items() if k != "method"}},  # each variant's own
            "key": plan.key, "masks": masks, "columns": column_help(columns),
            "complete": all((v.name, s) in rows for v in plan.variants for s in plan.seeds),
            "variants": variants}


def write_document(path: Path, header: dict, plan: Plan, masks: dict, rows: dict[tuple[str, int], dict]) -> dict:
    data = document(header, plan, masks, rows)
    write_json(path, data)
    return data
