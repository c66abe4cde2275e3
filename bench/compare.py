"""Compare unlearning methods on one run: same mask, steps, seed and LoRA rank; early stopping off.

    python bench/compare.py --run-dir runs/full [--methods masked_lora,npo,...] [--steps 40] [--eval-items 16]
                            [--attacks] [--set evaluate.OPTION=VALUE ...]

Needs a run directory whose baseline, attribute and mask stages are done. For every method it trains
an adapter from scratch, evaluates it with the evaluate stage's metrics (forget, locality, utility,
fluency), writes `compare/<method>/` and `compare/compare.json` (the report shows it), and prints one
table with the wall time of each training run. With --attacks it also runs the adversarial prompt
families and both attacks (int8/int4 quantisation, relearning) on every method's adapter.

Rows already in `compare/compare.json` from a run with the same steps, seed, evaluation items and
metrics are kept, so methods can be added one invocation at a time.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from agmask.cli.options import _parse_set
from agmask.config import RunConfig, resolve_stage_config
from agmask.errors import AgmaskError
from agmask.evaluate import evaluate_model
from agmask.files import load_tensors, read_json, read_jsonl, write_json
from agmask.lora import masked_lora
from agmask.progress import Reporter
from agmask.session import Session
from agmask.stages import evaluate as evaluate_stage
from agmask.stages import unlearn as unlearn_stage
from agmask.unlearn import METHODS, get_method
from agmask.unlearn.trainer import train

METRICS = ("forget_efficacy", "probe_recall", "forget_base_known", "locality", "retain_utility", "kl_greedy", "fluency")
ATTACKS = ("adversarial", "answer_formats", "attack_quantization", "attack_relearn", "attack_quantization_full",
           "attack_relearn_full")


def attack_columns(m: dict) -> dict:
    """Worst adversarial family (max MC share after unlearning) and each attack's recovered fraction."""
    out = {}
    if "adversarial" in m:
        fams = m["adversarial"]["families"]
        worst = max(fams, key=lambda f: fams[f]["worst"]["max_mc_share"])
        out["adversarial_worst_family"] = worst
        out["adversarial_worst_mc_share"] = fams[worst]["worst"]["max_mc_share"]
    if "answer_formats" in m:
        af = m["answer_formats"]
        out["worst_format"] = af["worst_format"]
        if af["worst_format"]:
            out["worst_format_concept_top1"] = af["formats"][af["worst_format"]]["concept"]["adapted"]["top1_rate"]
    for key in [k for k, v in m.items() if v.get("kind") == "attack"]:
        for variant, v in m[key].get("variants", {}).items():
            label = variant if key in ("attack_quantization", "attack_relearn") else f"{key.removeprefix('attack_')} {variant}"
            out[f"recovered_{label}"] = v["recovered_fraction"] if v["flag"] is None else v["flag"]
    return out


def _ci(metric: dict, key: str) -> list | None:
    """[low, high] of a bootstrap interval in a metric's `intervals`, or None."""
    iv = (metric.get("intervals") or {}).get(key)
    return None if not iv or iv.get("low") is None else [round(iv["low"], 4), round(iv["high"], 4)]


def row_of(metrics: dict, seconds: float, steps: int) -> dict:
    m = metrics["metrics"]
    fk, loc, kl, flu = m["forget_base_known"], m["locality"], m["kl_greedy"]["sets"], m["fluency"]["overall"]
    return {
        "forget_known_n": fk["adapted"]["n"],
        "forget_known_mc_top1": fk["adapted"]["mc_top1_rate"],
        "forget_known_mc_share": fk["adapted"]["mc_share"],
        "forget_known_mc_share_ci": _ci(fk, "adapted.mc_share"),
        "forget_known_median_rank": fk["adapted"]["median_first_token_rank"],
        "forget_eval_dlogp": fk["forget_eval_mean_logprob_change"],
        "neighbors_abs_dlogp": loc["mean_abs_delta_answer_logprob"],
        "neighbors_anchored_abs_dlogp": (loc.get("anchored") or {}).get("mean_abs_delta_answer_logprob"),
        "neighbors_unseen_abs_dlogp": (loc.get("unseen") or {}).get("mean_abs_delta_answer_logprob"),
        "neighbors_unseen_abs_dlogp_ci": _ci(loc, "unseen.mean_abs_delta_answer_logprob"),
        "neighbors_mc_top1": f"{loc['mc_top1_count']['adapted']}/{loc['mc_top1_count']['base']}",
        "retain_eval_kl": (kl.get("retain_eval") or {}).get("mean_kl_per_token"),
        "retain_eval_kl_ci": _ci(m["kl_greedy"], "sets.retain_eval.mean_kl_per_token"),
        "repetition": flu["adapted"]["repetition_rate"],
        "repetition_base": flu["base"]["repetition_rate"],
        "train_seconds": round(seconds, 1), "steps": steps,
        **attack_columns(m),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int, default=None, help="default: the run budget's unlearn steps")
    ap.add_argument("--eval-items", type=int, default=None,
                    help="items per evaluation set (spread over families); default: the run budget's")
    ap.add_argument("--attacks", action="store_true", help="also adversarial families, quantisation and relearning")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="STAGE.OPTION=VALUE",
                    help="override a stage option (unlearn.* or evaluate.*), as in `agmask run --set`")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    manifest = read_json(args.run_dir / "manifest.json")
    cfg = RunConfig(model=manifest["model"]["spec"], concepts=[manifest["concept"]["source"].removeprefix("shipped:")],
                    run_dir=args.run_dir, seed=manifest["seed"], budget=manifest["budget"],
                    device=manifest["device"], dtype=manifest["dtype"], overrides=_parse_set(tuple(args.sets)))
    reporter = Reporter(enabled=not args.quiet)
    session = Session.create(cfg, reporter=reporter)
    model, tok, info = session.model()
    spec = session.spec
    base_conf = resolve_stage_config(unlearn_stage, cfg)
    conf_steps = args.steps or base_conf.steps
    metric_names = METRICS + (ATTACKS if args.attacks else ())
    eval_conf = dataclasses.replace(resolve_stage_config(evaluate_stage, cfg), metrics=metric_names)
    if args.eval_items is not None:
        eval_conf = dataclasses.replace(eval_conf, max_items=args.eval_items)
    masks = load_tensors(args.run_dir / "mask" / "mask.safetensors")
    layers = sorted(masks["mask"].any(1).nonzero().flatten().tolist())
    baseline_rows = read_jsonl(args.run_dir / "baseline" / "answers.jsonl")
    gen_tokens = resolve_stage_config(__import__("agmask.stages.baseline", fromlist=["x"]), cfg).generation_tokens
    out = args.run_dir / "compare"
    settings = {"model": cfg.model, "concept": spec.name, "layers": layers, "steps": conf_steps,
                "eval_items": eval_conf.max_items, "seed": cfg.seed, "metrics": list(metric_names),
                "overrides": args.sets}
    previous = read_json(out / "compare.json") if (out / "compare.json").exists() else {}
    same = all(previous.get(k) == v for k, v in settings.items())
    table = dict(previous.get("methods", {})) if same else {}
    for name in args.methods.split(","):
        method = get_method(name)
        conf = dataclasses.replace(base_conf, method=name, steps=conf_steps, early_stop_nats=0.0)
        param = {"mask": masks["mask"], "random": masks["random"], "unmasked": None}[method.parameterisation]
        with masked_lora(model, param, layers=layers, r=conf.r, alpha=conf.alpha, name=spec.name,
                         seed=cfg.seed) as adapter:
            t0 = time.perf_counter()
            rows = train(adapter, method, tok, spec, conf, seed=cfg.seed, reporter=reporter)
            seconds = time.perf_counter() - t0
        for p in adapter.model.parameters():
            p.requires_grad_(False)
        metrics = evaluate_model(adapter.model, tok, spec, eval_conf, out / name, baseline_rows=baseline_rows,
                                 baseline_generation_tokens=gen_tokens, resume=False, reporter=reporter,
                                 adapter=adapter)
        table[name] = row_of(metrics, seconds, len(rows))
        model = adapter.model.unload()
        write_json(out / "compare.json", {**settings, "masked_neurons": int(masks["mask"].sum()), "methods": table})
        print(name, table[name], flush=True)
    cols = list(dict.fromkeys(c for row in table.values() for c in row))
    print("\nmethod".ljust(16) + " | ".join(cols))
    for name, row in table.items():
        print(name.ljust(15) + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v)
                                          for v in (row.get(c, "") for c in cols)))


if __name__ == "__main__":
    try:
        main()
    except AgmaskError as e:  # a bad --set, an unknown method, a run dir without its mask: one line, no traceback
        raise SystemExit(f"compare: {e}") from None
