"""Sections of docs/RESULTS.md read from other stages' files: each takes the run directory and returns markdown,
or None when the run has no such file. Optional stages written by other commands (`compare`, `ablate`, `tune`)
are rendered generically from their JSON, so a new column needs no edit here."""
from __future__ import annotations

from pathlib import Path

from agmask.files import read_json, read_jsonl
from agmask.results.markdown import code, flatten, key_table, num, records_table, table


def _json(path: Path):
    return read_json(path) if path.is_file() else None


def baseline(run_dir: Path) -> str | None:
    """What the base model knows, per prompt set."""
    summary = _json(run_dir / "baseline" / "summary.json")
    if not summary:
        return None
    rows = [[name, s.get("n"), s.get("mean_answer_logprob"), s.get("median_first_token_rank"), s.get("mc_share"),
             s.get("mc_top1_rate"), s.get("base_known_n"), s.get("greedy_hit_rate_base_known")]
            for name, s in summary.items()]
    return table(["set", "n", "mean answer log-prob", "median first-token rank", "MC share", "MC top-1 rate",
                  "base-known n", "greedy hit (base-known)"], rows)


def perturb(run_dir: Path) -> str | None:
    """How stable the base model's answer is when the question is reworded, per family."""
    stability = _json(run_dir / "perturb" / "stability.json")
    if not stability or not stability.get("families"):
        return None
    families = {**stability["families"], "overall": stability.get("overall") or {}}
    rows = [[name, v.get("n_prompts"), v.get("consistency"), v.get("distinct_answers"), v.get("entropy_bits"),
             v.get("hit_rate"), v.get("flip_rate"), v.get("answer_logprob_mean"), v.get("mc_share_mean")]
            for name, v in families.items()]
    return table(["family", "prompts", "consistency", "distinct answers", "entropy (bits)", "hit rate",
                  "flip vs original", "answer log-prob", "MC share"], rows)


def attribution(run_dir: Path) -> str | None:
    """Where the concept's neurons sit: layers by attribution, the top neurons, the mask chosen from them."""
    layers, mask = _json(run_dir / "attribute" / "layers.json"), _json(run_dir / "mask" / "mask.json")
    if not layers:
        return None
    top = layers.get("top_neurons") or []
    per_layer = layers.get("top_neurons_per_layer") or []
    lines = [f"- layers by where the top-{len(top)} combined-score neurons sit: {layers.get('layers_by_top_neurons', [])[:6]}",
             f"- layers by gradient sensitivity: {layers.get('layers_by_sensitivity', [])[:6]}",
             "- top neurons per layer: " + ", ".join(f"{i}: {c}" for i, c in enumerate(per_layer) if c),
             "- top 10 neurons (layer, unit, combined score): "
             + ", ".join(f"({n['layer']}, {n['unit']}, {num(n.get('combined'))})" for n in top[:10])]
    if mask:
        lines.append(f"- mask ({mask.get('selection', mask.get('method', '-'))}): {mask.get('selected')} neurons in "
                     f"layers {mask.get('layers')}, {num(100 * (mask.get('fraction') or 0))}% of "
                     f"{mask.get('total_mlp_neurons')} MLP neurons")
    return "\n".join(lines)


def adapter(run_dir: Path) -> str | None:
    """The mask and the trained adapter: where it acts, how large it is, how training ended."""
    summary = _json(run_dir / "unlearn" / "summary.json")
    if not summary:
        return None
    total = summary.get("total_mlp_neurons") or 0
    masked = summary.get("masked_neurons")
    share = f" ({num(100 * masked / total)}% of {total} MLP neurons)" if masked and total else ""
    final = {k: v for k, v in (summary.get("final") or {}).items() if k not in ("step", "seconds")}
    lines = [f"- method {code(str(summary.get('method')))}, {summary.get('steps_run')} steps in "
             f"{num(summary.get('seconds'))} s",
             f"- mask: {num(masked) if masked is not None else 'none (unmasked)'} neurons{share} in layers "
             f"{summary.get('layers')}",
             f"- adapter: {num((summary.get('adapter_bytes') or 0) / 1e6)} MB, {summary.get('adapter_parameters')} "
             "LoRA parameters"]
    if final:
        lines.append("- last step: " + ", ".join(f"{k} {num(v)}" for k, v in final.items()))
    return "\n".join(lines)


def compare(run_dir: Path) -> str | None:
    """Every unlearning method or mask variant at equal steps and seeds (`agmask compare`)."""
    data = _json(run_dir / "compare" / "compare.json")
    if not data:
        return None
    if isinstance(data.get("variants"), dict):  # variants with mean / sd over seeds: one column per variant
        return _variants(data)
    methods = data.get("methods")  # one row per method (bench/compare.py's layout)
    if not isinstance(methods, dict):
        return key_table(data)
    records = [{"method": name, **(row if isinstance(row, dict) else {"value": row})} for name, row in methods.items()]
    settings = flatten({k: v for k, v in data.items() if k != "methods"})
    head = ("Settings: " + ", ".join(f"{k} {num(v)}" for k, v in settings.items()) + "\n\n") if settings else ""
    return head + records_table(records, first="method")


def _spread(entry: dict, column: str) -> str:
    """`mean ± sd` over seeds; with one seed `value [low, high]` (bootstrap over prompts) or the value."""
    mean = (entry.get("mean") or {}).get(column)
    sd, ci = (entry.get("sd") or {}).get(column), (entry.get("ci") or {}).get(column)
    if mean is None:
        return "-"
    if sd is not None:
        return f"{num(mean)} ± {num(sd)}"
    return f"{num(mean)} [{num(ci[0])}, {num(ci[1])}]" if ci else num(mean)


def _variants(data: dict) -> str:
    variants, settings = data["variants"], data.get("settings") or {}
    columns = list(dict.fromkeys(c for entry in variants.values() for c in entry.get("mean") or {}))
    rows = [["seeds", *[entry.get("n_seeds", len(entry.get("rows") or [])) for entry in variants.values()]]]
    rows += [[column, *[_spread(entry, column) for entry in variants.values()]] for column in columns]
    seeds = settings.get("seeds") or []
    head = (f"{len(variants)} variants × {len(seeds)} seed(s) {seeds}, {settings.get('steps')} steps, reference mask "
            f"{data.get('reference', '-')}; mean ± sd over seeds (one seed: value [95% bootstrap interval over prompts])"
            + ("" if data.get("complete", True) else "; **incomplete**: not every row has run") + ".")
    return head + "\n\n" + table(["measure", *variants], rows)


def ablate(run_dir: Path) -> str | None:
    """The causal check (`agmask ablate`): ablating the chosen neurons against random ones of the same layers."""
    data = _json(run_dir / "ablate" / "ablation.json")
    if not data:
        return None
    sets = data.get("sets")
    if not isinstance(sets, dict):
        return key_table(data)
    rows = []
    for name, s in sets.items():
        top, rand = s.get("top") or {}, s.get("random") or {}
        spread = f" ± {num(rand['sd_change'])}" if rand.get("sd_change") is not None else ""
        rows.append([name, s.get("n"), s.get("base_mean_logprob"), top.get("mean_change"),
                     f"{num(rand.get('mean_change'))}{spread}" if rand else "-"])
    head = (f"{data.get('ablation', '-')}-ablation of the mask's top {data.get('units')} units (of "
            f"{data.get('mask_units')}, by {data.get('ranked_by')}) at {data.get('positions')} positions, layers "
            f"{data.get('layers')}, against {data.get('draws')} random draws from the same layers.")
    lines = [f"- top / random on the concept: {num(data.get('top_vs_random'))}"
             + (f" ({data['flag']})" if data.get("flag") else "")]
    lines += [f"- {status} neighbours' mean abs change per nat the concept falls: {num(ratio)}"
              for status, ratio in (data.get("neighbour_vs_concept") or {}).items()]
    split = data.get("split_half") or {}
    if split.get("jaccard") is not None:
        lines.append(f"- split-half Jaccard of the top {split.get('k')}: {num(split['jaccard'])} "
                     f"(chance {num(split.get('chance'))})")
    return "\n\n".join([head, table(["set", "n", "base answer log-prob", "top units: change",
                                       "random: change (mean ± sd)"], rows), "\n".join(lines)])


def tune(run_dir: Path) -> str | None:
    """The recipe search on the training halves (`agmask tune`): every trial, then the choice and its rule."""
    trials_path, choice = run_dir / "tune" / "trials.jsonl", _json(run_dir / "tune" / "choice.json")
    trials = read_jsonl(trials_path) if trials_path.is_file() else []
    parts = []
    if trials:
        parts.append(f"{len(trials)} trials (half B of the training sets):\n\n"
                     + records_table(trials, first="trial" if "trial" in trials[0] else "number"))
    if choice:
        picked = choice.get("trial")
        number = picked.get("trial") if isinstance(picked, dict) else picked
        met = choice.get("meets_every_constraint")
        text = f"Chosen: trial {num(number)}" + ("" if met is None else f" (meets every constraint: {num(met)})")
        if choice.get("rule"):
            text += f". Rule: {choice['rule']}"
            text += _rechosen(choice["rule"], trials, number)
        options = choice.get("options")
        parts.append(text + ("\n\n" + key_table(options) if isinstance(options, dict) else
                             "\n\n" + key_table({k: v for k, v in choice.items() if k not in ("rule", "trial")})))
    return "\n\n".join(parts) or None


def _rechosen(rule: str, trials: list[dict], chosen) -> str:
    """For a search chosen under an earlier selection rule: the trial today's rule picks from its recorded trials."""
    from agmask.tuning.rule import RULE, assess, choose

    if rule == RULE or not all("measurements" in t for t in trials if t.get("state") == "complete"):
        return ""
    picked = choose([{**t, **assess(t["measurements"])} if t.get("state") == "complete" else t for t in trials])
    if picked is None:
        return ""
    if picked["trial"] == chosen:
        return "\n\nChosen under an earlier rule; today's rule (docs/TUNING.md) picks the same trial."
    return (f"\n\nChosen under an earlier rule; today's rule (docs/TUNING.md) picks trial {picked['trial']} "
            f"({picked.get('start', 'sampled')}) from the same trials.")


def timing(run_dir: Path) -> str | None:
    """Wall seconds of each stage as the driver measured them (its DONE marker), in pipeline order."""
    from agmask.pipeline import all_stages, read_done

    rows = []
    for stage in all_stages():
        done = read_done(run_dir, stage)
        if done and done.get("seconds") is not None:
            rows.append([stage, done["seconds"], done.get("finished_at", "-")])
    if not rows:
        return None
    total = sum(r[1] for r in rows)
    rows.append(["**total**", round(total, 1), f"{num(total / 60)} min"])
    return table(["stage", "seconds", "finished at"], rows) + (
        "\n\nA stage's seconds include loading the model when it is the first stage of its invocation that needs it.")


def regression(run_dir: Path) -> str | None:
    """Incremental runs: every concept so far re-scored with the whole adapter stack after each concept."""
    rows_in = _json(run_dir / "regression.json")
    if not rows_in:
        return None
    rows = []
    for row in rows_in if isinstance(rows_in, list) else rows_in.get("rows", []):
        fe, nb = row.get("forget_eval") or {}, row.get("neighbors") or {}
        rows.append([row.get("after"), row.get("concept"), fe.get("base_known_n"), fe.get("mc_top1_rate_base_known"),
                     fe.get("median_first_token_rank_base_known"), fe.get("mean_logprob_change"),
                     nb.get("mean_abs_logprob_change"), nb.get("anchored_mean_abs_logprob_change"),
                     nb.get("unseen_mean_abs_logprob_change")])
    return table(["after", "concept", "forget_eval base-known n", "MC top-1 rate (base-known)",
                  "median rank (base-known)", "forget_eval log-prob change", "neighbours mean abs change",
                  "anchored", "unseen"], rows)
