"""Choose unlearning hyper-parameters on the TRAINING sets only (never on an evaluation set).

    python bench/tune.py --concept inception --configs '[{"lr": 2e-3}, {"lr": 2e-3, "retain_weight": 5}]'
                         [--mask '{"k": 256, "num_layers": 4}'] [--attribution-retain-weight 1.0]
                         [--positions answer|all|subject|prompt]

--mask takes any mask stage option (`{"selection": "causal", "candidates": 128}` for the causal
selection, run on half A like the attribution); --positions is `attribute.positions`.

forget_train and retain_train are split in two halves (A: fit, B: validation). Attribution, the
mask and training use half A; the table reports, on half B: forgetting (the concept's multiple-choice
top-1 rate and share on base-known prompts, median first-token rank, also with the forget prompts put
after the other answer lead the training sets use, mean answer log-prob change)
and locality (mean |change| of the answer log-prob on neighbour-type retain prompts, i.e. those
whose answer is a candidate title, and on the general ones). Every config starts from the same mask
and seed, and the LoRA weights are reset between configs. The concept is read through
`agmask.concepts.training_view`: the evaluation sets cannot be touched here (a test checks it).
A concept with recommend_train prompts has them split the same way (training on half A, for
`recommend_weight` / `preference_weight`); on half B the table adds the concept's candidate share after
`I recommend "`, the KL over the other candidates (concept removed, renormalised) and the share of prompts
whose top remaining title is unchanged.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch

from agmask.attribution import SCORES, combined_score, neuron_stats
from agmask.concepts import load_concept, training_halves
from agmask.concepts.training_view import training_view
from agmask.evaluate.metrics_recommend import preference_stats
from agmask.lora import masked_lora
from agmask.masking import choose_layers, mask_from_scores
from agmask.masking.causal import causal_selection
from agmask.models import load
from agmask.scoring import BASE_KNOWN_RANK, candidate_logprobs, score_items
from agmask.stages.mask import Config as MaskConfig, causal_options
from agmask.stages.unlearn import Config as UnlearnConfig
from agmask.unlearn import get_method
from agmask.unlearn.data import training_leads
from agmask.unlearn.trainer import train


def measure(model, tok, spec, forget_b, retain_b, other_lead: str | None = None, recommend_b=()) -> dict:
    f = [r.to_dict() for r in score_items(model, tok, spec, "forget_train", forget_b)]
    r = [r.to_dict() for r in score_items(model, tok, spec, "retain_train", retain_b)]
    out = {"forget": f, "retain": r}
    if recommend_b:  # (N, C) candidate log-probs after the recommend lead
        out["recommend"] = torch.tensor([candidate_logprobs(model, tok, spec, "recommend_train", it)
                                         for it in recommend_b], dtype=torch.float64)
    if other_lead is not None:  # the same forget prompts after another lead the training sets use
        other = spec.model_copy(update={"lead": {**spec.lead, "forget_train": other_lead}})
        out["forget_other_lead"] = [r.to_dict() for r in score_items(model, tok, other, "forget_train", forget_b)]
    return out


def median_rank_known(base_rows: list[dict], after_rows: list[dict]) -> float | None:
    known = [i for i, row in enumerate(base_rows) if row["first_token_rank"] <= BASE_KNOWN_RANK]
    return statistics.median(after_rows[i]["first_token_rank"] for i in known) if known else None


def mean_or_nan(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else float("nan")


def recommend_summary(base: dict, after: dict, spec) -> str:
    """recommend_train half B: the concept's candidate share base -> after, KL over the rest, top remaining kept."""
    if "recommend" not in base:
        return "-"
    s = preference_stats(base["recommend"], after["recommend"], list(spec.candidates), spec.concept_candidates())
    return (f"{s['base']['concept_share']:.3f}->{s['adapted']['concept_share']:.3f} | {s['kl_remaining_mean']:.3f} | "
            f"{s['top_remaining_unchanged']:.2f}")


def summary(base: dict, after: dict) -> dict:
    known = [i for i, row in enumerate(base["forget"]) if row["first_token_rank"] <= BASE_KNOWN_RANK]
    fa = [after["forget"][i] for i in known]
    neighbour = [i for i, row in enumerate(base["retain"]) if row["mc_share"] is not None]
    general = [i for i, row in enumerate(base["retain"]) if row["mc_share"] is None]
    d = lambda i: after["retain"][i]["answer_logprob"] - base["retain"][i]["answer_logprob"]
    return {
        "known_n": len(known),
        "top1": mean_or_nan(float(x["mc_top1"]) for x in fa),
        "share": mean_or_nan(x["mc_share"] for x in fa),
        "med_rank": median_rank_known(base["forget"], after["forget"]),
        "dlogp_forget": statistics.fmean(a["answer_logprob"] - b["answer_logprob"]
                                         for a, b in zip(after["forget"], base["forget"])),
        "neigh_abs": mean_or_nan(abs(d(i)) for i in neighbour),
        "neigh_top1": (sum(after["retain"][i]["mc_top1"] for i in neighbour), sum(base["retain"][i]["mc_top1"] for i in neighbour)),
        "general_abs": mean_or_nan(abs(d(i)) for i in general),
        "med_rank_other_lead": median_rank_known(base["forget_other_lead"], after["forget_other_lead"])
        if "forget_other_lead" in base else None,
    }


def tune(model, tok, info, spec, configs: list[dict], mask_opts: dict, seed: int = 0,
         attribution_retain_weight: float = 1.0, log=print, positions: str = "answer") -> list[dict]:
    """Fit every config on half A of the training sets and measure it on half B; one row per config.

    `spec` is read through `training_view`: an evaluation set touched on this path is an error.
    """
    spec = training_view(spec)
    forget_a, forget_b = training_halves(spec.forget_train)
    retain_a, retain_b = training_halves(spec.retain_train)
    recommend_a, recommend_b = training_halves(spec.recommend_train)
    fit_spec = spec.model_copy(update={"forget_train": forget_a, "retain_train": retain_a, "recommend_train": recommend_a})
    other_leads = [lead for lead in training_leads(spec, spec.forget_train, spec.retain_train)
                   if lead != spec.lead_for("forget_train")]
    other_lead = other_leads[0] if other_leads else None
    t0 = time.perf_counter()
    base = measure(model, tok, spec, forget_b, retain_b, other_lead, recommend_b)
    log(f"base measured in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    fs = neuron_stats(model, tok, fit_spec, "forget_train", forget_a, positions=positions)
    rs = neuron_stats(model, tok, fit_spec, "retain_train", retain_a, positions=positions)
    combined = combined_score({s: fs.mean(s) for s in SCORES}, {s: rs.mean(s) for s in SCORES},
                              attribution_retain_weight)
    top_counts = torch.zeros(info.num_layers)
    for idx in torch.topk(combined.flatten(), min(100, combined.numel())).indices:
        top_counts[idx // info.intermediate_size] += 1
    ranking = torch.argsort(top_counts, descending=True, stable=True).tolist()
    mask_conf = MaskConfig(**mask_opts)
    if mask_conf.selection == "causal":  # measured on half A only (forget_a, retain_a)
        mask = causal_selection(model, tok, fit_spec, combined, causal_options(mask_conf, seed)).mask
        layers = sorted(torch.nonzero(mask.any(1)).flatten().tolist())
    else:
        layers = choose_layers(ranking, mask_conf.num_layers, mask_conf.layers, info.num_layers)
        mask = mask_from_scores(combined, layers, mask_conf.method, mask_conf.k, mask_conf.threshold)
    log(f"attribution on half A in {time.perf_counter() - t0:.0f} s; mask {int(mask.sum())} neurons in {layers}")
    log(f"config | known | top1 | share | med rank | med rank after {other_lead!r} | dlogp forget | |d| neighbour | "
        "neigh top1 after/base | |d| general | recommend B: concept share | KL rest | top kept | s")
    results = []
    for overrides in configs:
        conf = dataclasses.replace(UnlearnConfig(), **overrides)
        method = get_method(conf.method)
        param = {"mask": mask, "random": None, "unmasked": None}[method.parameterisation]
        t0 = time.perf_counter()
        with masked_lora(model, param, layers=layers, r=conf.r, alpha=conf.alpha, seed=seed) as adapter:
            rows = train(adapter, method, tok, fit_spec, conf, seed=seed)
        after = measure(adapter.model, tok, spec, forget_b, retain_b, other_lead, recommend_b)
        s = summary(base, after)
        model = adapter.model.unload()
        results.append({"config": overrides, "steps": len(rows), **s, "recommend": recommend_summary(base, after, spec)})
        log(f"{json.dumps(overrides)} | {s['known_n']} | {s['top1']:.2f} | {s['share']:.3f} | {s['med_rank']} | "
            f"{s['med_rank_other_lead']} | {s['dlogp_forget']:.2f} | {s['neigh_abs']:.2f} | "
            f"{s['neigh_top1'][0]}/{s['neigh_top1'][1]} | {s['general_abs']:.2f} | {recommend_summary(base, after, spec)} | "
            f"{time.perf_counter() - t0:.0f} "
            f"(steps {len(rows)})")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--concept", default="inception")
    ap.add_argument("--configs", required=True, help="JSON list of unlearn option overrides")
    ap.add_argument("--mask", default='{"k": 256, "num_layers": 4}', help="JSON: k, num_layers, method, layers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--positions", default="answer", help="attribute.positions on half A")
    ap.add_argument("--attribution-retain-weight", type=float, default=1.0,
                    help="lambda of the combined score the mask is built from (attribute.retain_weight)")
    args = ap.parse_args()
    model, tok, info = load(args.model)
    spec = training_view(load_concept(args.concept).spec)  # never an evaluation set on this path
    tune(model, tok, info, spec, json.loads(args.configs), json.loads(args.mask), args.seed,
         args.attribution_retain_weight, log=lambda line: print(line, flush=True), positions=args.positions)


if __name__ == "__main__":
    main()
