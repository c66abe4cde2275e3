"""What the CLI prints after a run: tables read from the run directory's JSON artefacts."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table


def _fmt(v, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def baseline_table(summary: dict, title: str) -> Table:
    table = Table(title=title)
    for col in ("set", "n", "mean answer log-prob", "median first-token rank", "MC share", "MC top-1",
                "base-known", "greedy hit (base-known)"):
        table.add_column(col, justify="right" if col != "set" else "left")
    for name, s in summary.items():
        table.add_row(name, str(s["n"]), _fmt(s["mean_answer_logprob"]), _fmt(s["median_first_token_rank"], ".0f"),
                      _fmt(s["mc_share"]), _fmt(s["mc_top1_rate"]), str(s["base_known_n"]),
                      _fmt(s["greedy_hit_rate_base_known"]))
    return table


def eval_summary(run_dir: Path) -> list[str]:
    """The five-line summary (forget, locality, utility, fluency, worst attack), a line on recommendations
    when they were measured, and which targets are met (`agmask.targets`); or one line saying why there is
    none when the evaluation is not current (an upstream stage reran since)."""
    from agmask.currency import current_stages
    from agmask.files import read_json
    from agmask.report.headline import headline_lines
    from agmask.rundir import RunDir
    from agmask.targets import evaluate_targets, targets_line

    path = RunDir(run_dir).eval_metrics
    if not path.is_file():
        return []
    why = current_stages(Path(run_dir)).get("evaluate")
    if why is not None:
        return [f"evaluation not shown, it is not current: {why}"]
    metrics = read_json(path)["metrics"]
    return headline_lines(metrics) + [targets_line(evaluate_targets(metrics))]


def print_eval_summary(run_dir: Path, report: Path | None = None) -> None:
    """Print the report path (when there is one) and the evaluation summary (five lines, recommendations,
    targets met)."""
    from agmask.rundir import RunDir

    report = report or RunDir(run_dir).report
    if report.is_file():
        print(f"report: {report}")
    for line in eval_summary(run_dir):
        print(line)


def _pm(mean, std, spec: str = ".2f") -> str:
    return "-" if mean is None else f"{mean:{spec}} ± {std:{spec}}"


def perturb_table(stability: dict) -> Table:
    table = Table(title=f"perturb: answer stability per family (set {stability['set']}, "
                        f"{stability['config']['samples']} samples + greedy per prompt)")
    for col in ("family", "prompts", "changed", "consistency", "distinct", "entropy (bits)", "hit rate",
                "flip vs original", "answer log-prob", "MC share"):
        table.add_column(col, justify="left" if col == "family" else "right")
    for name, s in [*stability["families"].items(), ("overall", stability["overall"])]:
        changed = None if name == "original" else s["changed_share"]  # share of prompts the family could change
        table.add_row(name, str(s["n_prompts"]), _fmt(changed), _fmt(s["consistency"]), str(s["distinct_answers"]),
                      _fmt(s["entropy_bits"]), _fmt(s["hit_rate"]), _fmt(s["flip_rate"]),
                      _pm(s["answer_logprob_mean"], s["answer_logprob_std"]), _pm(s["mc_share_mean"], s["mc_share_std"]))
    return table


def similarity_table(sim: dict) -> Table:
    table = Table(title=f"similarity: RSA (Spearman ρ, semantic vs activation) over {sim['num_prompts']} prompts, "
                        f"{sim['position']} token")
    for col in ("activations", "prompts", "best layer", "ρ best", "p best", "ρ middle layer", "ρ mean", "ρ min",
                "ρ last layer"):
        table.add_column(col, justify="left" if col in ("activations", "prompts") else "right")
    middle, primary = sim["middle_layer"], sim["primary_kind"]
    curves = [(kind, "all", layers) for kind, layers in sim["layers"].items()]
    curves += [(primary, f"within {g}", [d["within"].get(g) for d in sim["layers"][primary]])
               for g in sim["layers"][primary][0]["within"]]
    for kind, which, entries in curves:
        vals = [(i, e["rsa"], e["p_value"]) for i, e in enumerate(entries) if e and e["rsa"] is not None]
        if not vals:
            table.add_row(kind, which, *["-"] * 7)
            continue
        best = max(vals, key=lambda v: v[1])
        rhos = [v[1] for v in vals]
        mid = entries[middle]["rsa"] if entries[middle] else None
        last = entries[-1]["rsa"] if entries[-1] else None
        table.add_row(kind, which, str(best[0]), _fmt(best[1]), _fmt(best[2], ".3f"), _fmt(mid),
                      _fmt(sum(rhos) / len(rhos)), _fmt(min(rhos)), _fmt(last))
    return table


def print_run_summary(run_dir: Path, stage: str | None = None) -> None:
    from agmask.files import read_json

    console = Console(width=150)
    run_dir = Path(run_dir)
    baseline = run_dir / "baseline" / "summary.json"
    if baseline.is_file() and stage in (None, "baseline"):
        manifest = read_json(run_dir / "manifest.json")
        console.print(baseline_table(read_json(baseline),
                                     f"baseline: {manifest['model']['spec']}, concept {manifest['concept']['name']}"))
    attribute = run_dir / "attribute" / "layers.json"
    if attribute.is_file() and stage in (None, "attribute"):
        layers = read_json(attribute)
        top = layers["top_neurons"][:5]
        console.print(f"attribute: most concept-specific layers (by top-{len(layers['top_neurons'])} combined "
                      f"neurons) {layers['layers_by_top_neurons'][:6]}; most sensitive layers "
                      f"{layers['layers_by_sensitivity'][:6]}; top neurons "
                      + ", ".join(f"L{n['layer']}.{n['unit']}" for n in top))
    mask = run_dir / "mask" / "mask.json"
    if mask.is_file() and stage in (None, "mask"):
        m = read_json(mask)
        console.print(f"mask: {m['selected']} of {m['total_mlp_neurons']} MLP neurons ({100 * m['fraction']:.2f}%) "
                      f"in layers {m['layers']}")
    tune = run_dir / "tune" / "choice.json"
    if tune.is_file() and stage in (None, "tune"):
        from agmask.tuning.recipe import choice_line

        console.print(choice_line(read_json(tune)))
    unlearn = run_dir / "unlearn" / "summary.json"
    if unlearn.is_file() and stage in (None, "unlearn"):
        u = read_json(unlearn)
        final = ", ".join(f"{k} {v:.3f}" for k, v in u["final"].items() if k not in ("step", "seconds"))
        console.print(f"unlearn: {u['method']}, {u['steps_run']} steps in {u['seconds']:.0f} s; final {final}; "
                      f"adapter {u['adapter_dir']} ({u['adapter_bytes'] / 1e6:.2f} MB, "
                      f"{u['adapter_parameters']} parameters)"
                      + (f"; recipe {u['recipe']['name']}" + (f" (trial {u['recipe']['trial']})"
                                                               if u["recipe"].get("trial") is not None else "")
                         if u.get("recipe") else ""))


    perturb = run_dir / "perturb" / "stability.json"
    if perturb.is_file() and stage in (None, "perturb"):
        console.print(perturb_table(read_json(perturb)))
    similarity = run_dir / "similarity" / "similarity.json"
    if similarity.is_file() and stage in (None, "similarity"):
        console.print(similarity_table(read_json(similarity)))
    console.print(f"run directory: {run_dir}")
    if stage in (None, "evaluate", "report"):
        print_eval_summary(run_dir)  # plain print: `make demo` ends with the report path and the summary
