"""The short tables the CLI prints for compare.json and ablation.json (rich)."""
from __future__ import annotations

from rich.table import Table

# (column of compare.json, header); attack columns are added as the file has them
CORE = [("forget_known_mc_top1", "MC top-1 (known)"), ("forget_known_mc_share", "MC share (known)"),
        ("neighbours_unseen_abs_dlogp", "unseen nbr abs Δ"), ("neighbours_anchored_abs_dlogp", "anchored nbr abs Δ"),
        ("retain_kl", "retain KL")]
FORMATS = {"retain_kl": ".3f", "train_seconds": ".0f"}


def cell(entry: dict, column: str, spec: str = ".2f") -> str:
    """`mean ± sd` over seeds; with one seed `value [low, high]` (bootstrap over prompts) or the value."""
    mean = entry.get("mean", {}).get(column)
    if mean is None:
        return "-"
    sd = entry.get("sd", {}).get(column)
    if sd is not None:
        return f"{mean:{spec}} ± {sd:{spec}}"
    ci = (entry.get("ci") or {}).get(column)
    return f"{mean:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else f"{mean:{spec}}"


def attack_columns(data: dict) -> list[tuple[str, str]]:
    """The attack columns worth a glance: MC top-1 vs base after relearning on `relearn` (not the control) and
    the recovered fraction under every-weight quantisation."""
    present = list(dict.fromkeys(c for e in data["variants"].values() for c in e.get("mean", {})))
    out = [(c, c.removesuffix("_mc_top1_vs_base").replace("_", " ") + " top-1/base") for c in present
           if c.endswith("_mc_top1_vs_base") and c.startswith("relearn_k")]
    out += [(c, c.removesuffix("_recovered").replace("_", " ") + " recovered") for c in present
            if c.endswith("_recovered") and c.startswith("quant_") and not c.startswith("quant_lora_")]
    return out


def compare_table(data: dict) -> Table:
    settings = data["settings"]
    seeds = len(settings["seeds"])
    spread = "mean ± sd over seeds" if seeds > 1 else "one seed: value [95% bootstrap interval over prompts]"
    table = Table(title=f"compare: {len(settings['variants'])} variants x {seeds} seed(s), {settings['steps']} steps, "
                        f"reference mask {data.get('reference')} ({spread})"
                        + ("" if data.get("complete", True) else "; INCOMPLETE"))
    columns = CORE + attack_columns(data) + [("train_seconds", "train s")]
    table.add_column("variant", no_wrap=True)
    table.add_column("seeds", justify="right")
    for _, header in columns:
        table.add_column(header, justify="right")
    for name, entry in data["variants"].items():
        table.add_row(name, str(entry.get("n_seeds", 0)), *[cell(entry, c, FORMATS.get(c, ".2f")) for c, _ in columns])
    return table


def _ratio(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def ablation_table(result: dict) -> Table:
    table = Table(title=f"ablate: {result['ablation']}-ablation of the mask's top {result['units']} units (of "
                        f"{result['mask_units']}, by {result['ranked_by']}) at {result['positions']} positions, layers "
                        f"{result['layers']}, vs {result['draws']} random draws of the same layers")
    for col in ("set", "n", "base answer log-prob", "top units: change", "random: change (mean ± sd)"):
        table.add_column(col, justify="left" if col == "set" else "right", no_wrap=col == "set")
    for name, s in result["sets"].items():
        if not s.get("n"):
            table.add_row(name, "0", "-", "-", "-")
            continue
        r = s["random"]
        sd = "" if r["sd_change"] is None else f" ± {r['sd_change']:.3f}"
        table.add_row(name, str(s["n"]), f"{s['base_mean_logprob']:.3f}", f"{s['top']['mean_change']:.3f}",
                      f"{r['mean_change']:.3f}{sd}")
    return table


def ablation_lines(result: dict) -> list[str]:
    """The ratios under the table (targets from the localisation issue: >= 3x, <= 1/3)."""
    ratio = result.get("top_vs_random")
    lines = [f"top / random on the concept: {'n/a' if ratio is None else f'{ratio:.1f}x'}"
             + (f" ({result['flag']})" if result.get("flag") else "")]
    for status, ratio in (result.get("neighbour_vs_concept") or {}).items():
        lines.append(f"{status} neighbours' mean |change| per nat the concept falls: {_ratio(ratio)}")
    half = result.get("split_half")
    if half and "jaccard" in half:
        lines.append(f"split-half Jaccard of the top {half['k']}: {half['jaccard']:.3f} (chance {half['chance']:.4f})")
    return lines
