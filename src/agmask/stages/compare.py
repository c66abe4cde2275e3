"""Optional: train mask variants (causal, saliency, random, whole layers, unmasked) at equal steps over seeds and evaluate each: costly (see compare.seeds).

Every variant x seed trains a fresh LoRA (the run's unlearn options, compare.steps, early stopping off;
the seed sets the LoRA init, the batch order and the random masks) and is evaluated with the evaluate
stage's metrics through `evaluate_model` (compare.metrics, a lean set by default). The causal and
saliency masks are made here from the run's attribution with the mask stage's own functions (the run's
own mask is reused when it is one of them); the control masks copy `compare.reference`. See
`agmask.comparison.variants` for the variants.

Writes `compare/compare.json` (settings, masks, per variant its per-seed rows and mean / sd; rewritten
after every row, and a row already there for the same settings is kept: an interrupted compare
continues, and adding a variant trains only the new one), `compare/masks.safetensors` (the causal and
saliency masks used), `compare/<variant>/seed<N>/` (each row's evaluation) and `compare/compare.png`
(forgetting vs locality on unseen neighbours, one point per variant with sd bars).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import field
from pathlib import Path
from typing import Literal

import torch
from pydantic import field_validator

from agmask.config import NonNegativeInt, PositiveInt, config_json, stage_options
from agmask.evaluate.config import QUANT_SCHEMES
from agmask.masking import layers_of

NAME = "compare"
DIR = "compare"
DEPENDS: tuple[str, ...] = ("baseline", "attribute", "mask")
SCORES_ANSWERS = True  # its outputs hold answer scores (agmask.scoring.SCORING_VERSION is in its input hash)
READS_OPTIONS: tuple[str, ...] = ("mask", "unlearn", "evaluate")  # it trains and evaluates with their options
RESUMABLE = True  # an interrupted compare keeps its finished rows (compare.json) and continues
RESUMES_ACROSS = ("variants", "seeds")  # ... also when the variants or seeds listed change
# Several processes: every process runs it, as unlearn and evaluate do (the trainer's DDP and the evaluation's
# sharded scoring need every process); the others write into a throwaway mirror (see agmask.pipeline).
PARALLEL = True
DEFAULT_METRICS = ("forget_base_known", "locality", "kl_greedy", "attack_relearn_full", "attack_quantization_full")
COST = ("every variant x seed is one training run (about 6 min at 40 steps on the 0.5B model, 2 CPU cores) plus the "
        "lean evaluation (several minutes, most of it the relearning attack): the full default, 6 variants x 3 "
        "seeds, takes about 3-4 hours there; demo (1 seed, 40 steps) about 1.5 hours (estimates)")


def _default_variants() -> list[str]:
    from agmask.comparison.variants import DEFAULT_VARIANTS

    return list(DEFAULT_VARIANTS)


@stage_options
class Config:
    variants: list[str] = field(default_factory=_default_variants, metadata={
        "help": "what to train: causal, saliency, random_same_layers, random_layers, full_layers, unmasked (masked_lora's "
                "loss on each mask), or an unlearning method by name (masked_lora, ga, npo, rmu, masked_refusal, "
                "unmasked_lora, random_mask) on the reference mask its parameterisation names"})
    seeds: PositiveInt = field(default=3, metadata={"help": f"seeds per variant (the run's --seed, +1, ...); {COST}"})
    steps: PositiveInt | None = field(default=None, metadata={"help": "training steps of every variant; default: "
                                                                      "unlearn.steps"})
    reference: Literal["causal", "saliency"] = field(default="causal", metadata={
        "help": "the mask whose layers and per-layer counts random_same_layers, random_layers, full_layers and "
                "unmasked copy (and the `mask` of the methods)"})
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS), metadata={
        "help": "evaluation metrics per row (see evaluate); the default is lean: forgetting on base-known prompts, "
                "locality all / anchored / unseen, retain KL (retain_eval only), the unconstrained relearning attack "
                "and every-weight quantisation"})
    max_items: NonNegativeInt | None = field(default=None, metadata={
        "help": "items per evaluation set; default: evaluate.max_items"})
    relearn_steps: PositiveInt = field(default=20, metadata={
        "help": "steps of the unconstrained relearning attack (attack_relearn_full), one checkpoint"})
    quant_schemes: list[Literal[QUANT_SCHEMES]] = field(default_factory=lambda: ["int4"], metadata={
        "help": "every-weight quantisations (attack_quantization_full)"})

    @field_validator("variants")
    @classmethod
    def _known_variants(cls, v: list[str]) -> list[str]:
        from agmask.comparison.variants import get_variant

        if not v:
            raise ValueError("name at least one variant")
        if len(set(v)) != len(v):
            raise ValueError(f"a variant is listed twice: {v}")
        for name in v:
            get_variant(name)
        return v

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str]) -> list[str]:
        from agmask.evaluate.registry import check_known

        check_known(v)
        if not v:
            raise ValueError("name at least one metric")
        return v


PRESETS = {"demo": {"seeds": 1}, "full": {}}


def _row_key(session, conf: Config) -> str:
    """Everything a row depends on except which variants and seeds are listed (see agmask.comparison.runner)."""
    from agmask.currency import digest, input_parts

    parts = input_parts(session, NAME)
    options = json.loads(config_json(conf))
    parts["stage_config"] = {k: v for k, v in options.items() if k not in ("variants", "seeds")}
    return digest(parts)


def _selected_masks(session, needed: list[str], log,
                    kept: tuple[dict, dict] = ({}, {})) -> tuple[dict[str, torch.Tensor], dict]:
    """The causal / saliency masks the variants need: the run's own mask when its selection made it, else one
    an earlier compare with the same settings made (`kept`), else made here with the mask stage's functions
    from the run's attribution. Returns them and what compare.json records."""
    from agmask.files import load_tensors, read_json
    from agmask.stages import mask as mask_stage

    conf = session.stage_config("mask")
    paths = session.paths
    run_mask = load_tensors(paths.mask)["mask"]
    score = mask_stage.chosen_score(conf, load_tensors(paths.attribute_scores))
    run_kind = "causal" if conf.selection == "causal" else "saliency"
    masks, info = {}, {}
    for kind in needed:
        if kind != run_kind and kind in kept[0] and kind in kept[1]:
            masks[kind], info[kind] = kept[0][kind], kept[1][kind]
            continue
        if kind == run_kind:
            masks[kind], source = run_mask, "the run's mask (mask/mask.safetensors)"
        else:  # the other selection, made here with the run's mask options
            wanted = dataclasses.replace(conf, selection="causal" if kind == "causal" else "score")
            causal = None
            if kind == "causal":
                model, tokenizer, _ = session.model()
                causal = (model, tokenizer, session.spec, session.reporter)
            rankings = {} if causal else read_json(paths.attribute_layers)
            masks[kind] = mask_stage.select(wanted, score, rankings, session.cfg.seed, log, causal).mask
            source = f"mask.selection={wanted.selection}, made here with the run's mask options"
        layers = layers_of(masks[kind])
        info[kind] = {"source": source, "layers": layers, "units": int(masks[kind].sum()),
                      "per_layer": {str(l): int(masks[kind][l].sum()) for l in layers}}
    return masks, info


def _earlier(cfg, view: Path) -> list[Path]:
    """Folders of earlier compares whose rows and masks may be kept: the interrupted attempt's (the staging
    view is kept for the same inputs), then the last finished compare's (unless --force, and only intact)."""
    from agmask.currency import real_run_dir, verify_outputs
    from agmask.errors import StageError

    folders, real = [view / DIR], real_run_dir(view)
    if not cfg.force:
        try:
            verify_outputs(real, NAME)  # intact as recorded (a missing DONE marker: nothing recorded to check)
            folders.append(real / DIR)
        except StageError:
            pass
    return folders


def _kept_rows(folders: list[Path], out: Path, plan) -> dict[tuple[str, int], dict]:
    """Rows of the plan already measured with the same settings (the same key) in `folders`; their evaluation
    folders are copied into `out`."""
    import shutil

    from agmask.comparison.runner import COMPARE_FILE, previous_rows

    wanted = {(v.name, seed) for v in plan.variants for seed in plan.seeds}
    rows = {key: row for key, row in previous_rows([f / COMPARE_FILE for f in folders], plan.key).items()
            if key in wanted}
    for row in rows.values():
        here = out / row["eval_dir"]
        source = next((f / row["eval_dir"] for f in folders if (f / row["eval_dir"]).is_dir()), None)
        if not here.exists() and source is not None:
            shutil.copytree(source, here)
    return rows


def _kept_masks(folders: list[Path], key: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The causal / saliency masks an earlier compare with the same key made (a causal selection costs several
    attribution passes on a real model), and what its compare.json says of them."""
    from agmask.comparison.runner import COMPARE_FILE
    from agmask.files import load_tensors, read_json

    for folder in folders:
        try:
            data = read_json(folder / COMPARE_FILE)
            if data.get("key") == key and (folder / "masks.safetensors").is_file():
                return load_tensors(folder / "masks.safetensors"), data.get("masks", {})
        except (OSError, ValueError, AttributeError):
            continue
    return {}, {}


def run(cfg, run_dir: Path, session) -> None:
    from agmask import distributed
    from agmask.comparison.figures import compare_figure
    from agmask.comparison.runner import COMPARE_FILE, Plan, row_dir, run_rows, train_and_evaluate, write_document
    from agmask.comparison.variants import get_variant, selected_needed
    from agmask.files import read_jsonl, save_tensors

    conf: Config = session.stage_config(NAME)
    log = session.reporter.log
    out = Path(run_dir) / DIR
    unlearn = session.stage_config("unlearn")
    unlearn = dataclasses.replace(unlearn, steps=conf.steps or unlearn.steps, early_stop_nats=0.0)
    evaluate = session.stage_config("evaluate")
    evaluate = dataclasses.replace(evaluate, metrics=tuple(conf.metrics), kl_sets=("retain_eval",),
                                   full_relearn_steps=(conf.relearn_steps,), full_quant_schemes=tuple(conf.quant_schemes),
                                   max_items=evaluate.max_items if conf.max_items is None else conf.max_items)
    variants = [get_variant(v) for v in conf.variants]
    plan = Plan(variants, [cfg.seed + i for i in range(conf.seeds)], unlearn, evaluate, _row_key(session, conf))

    folders = _earlier(cfg, Path(run_dir))
    rows = distributed.broadcast(_kept_rows(folders, out, plan))  # every process trains the same rows
    if rows:
        log(f"compare: {len(rows)} row(s) kept from an earlier run with the same settings")
    selected, mask_info = _selected_masks(session, selected_needed(conf.variants, conf.reference), log,
                                          _kept_masks(folders, plan.key))
    save_tensors(out / "masks.safetensors", selected)
    header = {"model": session.cfg.model, "concept": session.spec.name, "reference": conf.reference,
              "metrics": list(conf.metrics), "chance_share": 1 / len(session.spec.candidates)}
    path = out / COMPARE_FILE
    write_document(path, header, plan, mask_info, rows)
    baseline_rows = read_jsonl(session.paths.baseline_answers)
    generation_tokens = session.stage_config("baseline").generation_tokens

    def train_row(variant, mask, layers, seed) -> dict:
        model, tokenizer, _ = session.model()
        return train_and_evaluate(session.with_prior_adapters(model), tokenizer, session.spec, variant, mask, layers,
                                  seed, plan, row_dir(out, variant.name, seed), baseline_rows, generation_tokens,
                                  session.drop_adapters, session.reporter, device=cfg.device,
                                  gradient_checkpointing=cfg.gradient_checkpointing)

    run_rows(plan, selected, conf.reference, rows, train_row,
             on_row=lambda: write_document(path, header, plan, mask_info, rows), log=log)
    data = write_document(path, header, plan, mask_info, rows)
    compare_figure(out / "compare.png", data)
