"""Markdown tables of a finished run directory's results (for the README and issue notes).

    python bench/results_tables.py RUN_DIR [--section baseline,perturb,attribute,unlearn,evaluate,regression,compare]

Reads only the run directory's JSON files (no model): baseline per set, perturbation stability per
family, layers and top neurons, the unlearning footprint, the evaluation's headline numbers, the
incremental regression table and the method comparison, whichever exist.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _load(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _f(v, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_f(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def baseline(run: Path) -> str | None:
    s = _load(run / "baseline" / "summary.json")
    if not s:
        return None
    rows = [[name, v["n"], v["mean_answer_logprob"], v["median_first_token_rank"], v["mc_share"], v["mc_top1_rate"],
             v["base_known_n"], v["greedy_hit_rate_base_known"]] for name, v in s.items()]
    return table(["set", "n", "mean answer log-prob", "median first-token rank", "MC share", "MC top-1",
                  "base-known n", "greedy hit (base-known)"], rows)


def perturb(run: Path) -> str | None:
    s = _load(run / "perturb" / "stability.json")
    if not s:
        return None
    fams = dict(s["families"], overall=s["overall"])
    rows = [[name, v.get("n_prompts"), v.get("consistency"), v.get("distinct_answers"), v.get("entropy_bits"),
             v.get("hit_rate"), v.get("answer_logprob_mean"), v.get("mc_share_mean"), v.get("mc_top1_rate")]
            for name, v in fams.items()]
    return table(["family", "prompts", "consistency", "distinct answers", "entropy (bits)", "hit rate",
                  "answer log-prob", "MC share", "MC top-1"], rows)


def attribute(run: Path) -> str | None:
    lay = _load(run / "attribute" / "layers.json")
    mask = _load(run / "mask" / "mask.json")
    if not lay:
        return None
    top = lay["top_neurons"][:10]
    lines = [f"- layers by where the top-{len(lay['top_neurons'])} combined neurons sit: {lay['layers_by_top_neurons'][:6]}",
             "- top neurons per layer: " + ", ".join(f"{i}: {c}" for i, c in enumerate(lay["top_neurons_per_layer"]) if c),
             f"- layers by gradient sensitivity: {lay['layers_by_sensitivity'][:6]}",
             "- top 10 neurons (layer, unit, combined score): "
             + ", ".join(f"({n['layer']}, {n['unit']}, {n['combined']:.3f})" for n in top)]
    if mask:
        lines.append(f"- mask: {mask['selected']} neurons in layers {mask['layers']} = {100 * mask['fraction']:.2f}% "
                     f"of {mask['total_mlp_neurons']} MLP neurons")
    return "\n".join(l for l in lines if l)


def unlearn(run: Path) -> str | None:
    s = _load(run / "unlearn" / "summary.json")
    if not s:
        return None
    fin = s.get("final", {})
    keys = ", ".join(f"{k} {v:.3f}" for k, v in fin.items() if isinstance(v, float) and k not in ("seconds",))
    return (f"- {s['method']}, {s['steps_run']} steps in {s['seconds']:.0f} s; final {keys}\n"
            f"- footprint: {s['masked_neurons']} masked neurons of {s['total_mlp_neurons']} MLP neurons "
            f"({100 * s['masked_neurons'] / s['total_mlp_neurons']:.2f}%) in layers {s['layers']}; adapter "
            f"{s['adapter_bytes'] / 1e6:.2f} MB, {s['adapter_parameters']} LoRA parameters")


def evaluate(run: Path) -> str | None:
    m = _load(run / "eval" / "metrics.json")
    if not m:
        return None
    m = m["metrics"]
    rows = []
    fk = m.get("forget_base_known")
    if fk:
        for side in ("base", "adapted"):
            v = fk[side]
            rows.append([f"forget_eval+probes base-known ({side})", v["n"], v["mc_top1_rate"], v["mc_share"],
                         v["median_first_token_rank"], "-"])
        rows.append(["forget_eval mean log-prob change (all)", "-", "-", "-", "-", fk["forget_eval_mean_logprob_change"]])
    out = [table(["forgetting", "n", "MC top-1", "MC share", "median first-token rank", "Δ log-prob"], rows)] if rows else []
    if fk:
        out.append(f"\nchance share: {fk['chance_share']:.3f}")
    loc = m.get("locality")
    lines = []
    if loc:
        lines.append(f"- neighbours: mean |Δ answer log-prob| {loc['mean_abs_delta_answer_logprob']:.3f} nats, mean Δ "
                     f"{loc['mean_delta_answer_logprob']:.3f}; MC top-1 count {loc['mc_top1_count']['base']} -> "
                     f"{loc['mc_top1_count']['adapted']}")
        for status in ("anchored", "unseen"):
            part, ci = loc.get(status) or {}, (loc.get("intervals") or {}).get(f"{status}.mean_abs_delta_answer_logprob")
            if part.get("n"):
                lines.append(f"  - {status} (n={part['n']}): mean |Δ| {part['mean_abs_delta_answer_logprob']:.3f} nats"
                             + (f" [95% {ci['low']:.3f}, {ci['high']:.3f}]" if ci and ci.get("low") is not None else ""))
    af = m.get("answer_formats")
    if af:
        lines.append("- answer formats (concept picked base -> adapted / share; worst "
                     f"{af['worst_format']}): " + "; ".join(
                         f"{f} {v['concept']['base']['top1_count']} -> {v['concept']['adapted']['top1_count']} of "
                         f"{v['concept']['adapted']['n']} / {_f(v['concept']['adapted']['share'], 3)} (chance "
                         f"{v['concept']['adapted']['chance']:.3f})" for f, v in af["formats"].items()))
    kl = (m.get("kl_greedy") or {}).get("sets", {})
    if kl:
        lines.append("- KL(base || adapted) per token on the base's greedy reply: "
                     + ", ".join(f"{k} {v['mean_kl_per_token']:.4f}" for k, v in kl.items()))
    ru = m.get("retain_utility")
    if ru:
        lines.append(f"- retain_eval greedy accuracy: {ru['accuracy']['base']:.3f} -> {ru['accuracy']['adapted']:.3f}")
    gt = m.get("general_text")
    if gt:
        lines.append(f"- general text ({gt['tokens_scored']} tokens): perplexity {gt['base_perplexity']:.3f} -> "
                     f"{gt['adapted_perplexity']:.3f}, KL {gt['mean_kl_per_token']:.4f}/token")
    fl = (m.get("fluency") or {}).get("overall")
    if fl:
        lines.append(f"- fluency: repetition {fl['base']['repetition_rate']:.3f} -> {fl['adapted']['repetition_rate']:.3f}, "
                     f"distinct-2 {fl['base']['distinct_2']:.3f} -> {fl['adapted']['distinct_2']:.3f}, degenerate "
                     f"{fl['base']['degenerate_rate']:.3f} -> {fl['adapted']['degenerate_rate']:.3f}")
    pr = m.get("probe_recall")
    if pr:
        fb, fa = pr["facts"]["base"], pr["facts"]["adapted"]
        lines.append(f"- probes: facts recalled {fb['facts_recalled']:.3f} -> {fa['facts_recalled']:.3f}, ROUGE-L recall "
                     f"{fb['rouge_l_recall']:.3f} -> {fa['rouge_l_recall']:.3f}")
    adv = m.get("adversarial")
    if adv:
        lines.append("- adversarial families (adapted MC top-1 / MC share): " + "; ".join(
            f"{k} {_f(v['adapted']['mc_top1_rate'], 2)}/{_f(v['adapted']['mc_share'], 3)}"
            for k, v in adv["families"].items()))
    sh = m.get("activation_shift")
    if sh:
        lines.append("- activation shift (mean relative residual change): " + ", ".join(
            f"{k} {v['mean']:.4f} (max {v['max']:.4f} at layer {v['max_layer']})" for k, v in sh["sets"].items()))
    ll = m.get("logit_lens")
    if ll:
        lines.append("- logit lens median best rank: " + ", ".join(
            f"{k} {v['base']['median_best_rank']} -> {v['adapted']['median_best_rank']}" for k, v in ll["sets"].items()))
    for key in [k for k, v in m.items() if v.get("kind") == "attack"]:
        a = m.get(key)
        if a:
            lines.append(f"- {key}: " + ", ".join(_attack(k, v) for k, v in a["variants"].items()))
    return "\n".join(out + ([""] if out else []) + lines)


def _attack(name: str, v: dict) -> str:
    if v.get("not_run"):
        return f"{name} not run ({v['not_run']})"
    lp = v["mean_answer_logprob"]
    text = (f"{name} recovered {_f(v['recovered_fraction'])} (log-prob {lp['attacked']:.2f}; unlearned "
            f"{lp['unlearned']:.2f}, base {lp['base']:.2f})" + (f" flag {v['flag']}" if v.get("flag") else ""))
    known = v.get("base_known")
    if known and known["attacked"].get("mc_n"):
        text += (f", base-known MC top-1 {known['base']['mc_top1_count']}/{known['unlearned']['mc_top1_count']}/"
                 f"{known['attacked']['mc_top1_count']} of {known['attacked']['mc_n']} (base/unlearned/attacked), "
                 f"median rank {known['attacked']['median_first_token_rank']}")
    return text


def regression(run: Path) -> str | None:
    r = _load(run / "regression.json")
    if not r:
        return None
    rows = []
    for row in (r if isinstance(r, list) else r.get("rows", [])):
        fe, nb = row["forget_eval"], row["neighbors"]
        rows.append([row["after"], row["concept"], fe["base_known_n"], fe["mc_top1_rate_base_known"],
                     fe["median_first_token_rank_base_known"], fe["mean_logprob_change"], nb["mean_abs_logprob_change"],
                     nb.get("anchored_mean_abs_logprob_change"), nb.get("unseen_mean_abs_logprob_change")])
    return table(["after", "concept", "forget_eval base-known n", "MC top-1 (base-known)", "median rank (base-known)",
                  "forget_eval Δ log-prob", "neighbours mean abs Δ", "anchored", "unseen"], rows)


def compare(run: Path) -> str | None:
    """`agmask compare`'s table (the report's rows: mean ± sd over seeds)."""
    from agmask.report.compare import compare_rows

    c = _load(run / "compare" / "compare.json")
    if not c or not isinstance(c.get("variants"), dict):
        return None
    header, rows = compare_rows(c)
    s = c["settings"]
    return (f"{len(s['variants'])} variants x {len(s['seeds'])} seed(s) {s['seeds']}, {s['steps']} steps, early stop "
            f"off, reference mask {c.get('reference')}\n\n" + table(header, rows))


SECTIONS = {"baseline": baseline, "perturb": perturb, "attribute": attribute, "unlearn": unlearn,
            "evaluate": evaluate, "regression": regression, "compare": compare}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--section", default=",".join(SECTIONS))
    args = ap.parse_args()
    for name in args.section.split(","):
        text = SECTIONS[name](args.run_dir)
        if text:
            print(f"### {name}\n\n{text}\n")


if __name__ == "__main__":
    main()
