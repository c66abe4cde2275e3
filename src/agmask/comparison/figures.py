"""compare.png and ablation.png, drawn from compare.json / ablation.json alone."""
from __future__ import annotations

from pathlib import Path

from agmask.files import save_figure

TOP, RANDOM = "#DD8452", "#4C72B0"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bar(entry: dict, column: str, value: float) -> tuple[float, float] | None:
    """(below, above) error of a point: the sd over seeds, else (one seed) its bootstrap interval, else None."""
    sd = entry.get("sd", {}).get(column)
    if sd is not None:
        return sd, sd
    ci = (entry.get("ci") or {}).get(column)
    return (value - ci[0], ci[1] - value) if ci else None


def compare_figure(path: Path, data: dict) -> bool:
    """Forgetting (base-known MC share) vs locality (unseen neighbours' mean |change|), one point per variant
    with sd bars (a single seed: its bootstrap interval over prompts). Without base-known prompts forgetting is
    the mean forget_eval log-prob change; without unseen neighbours locality is over all of them. False when
    no variant has both numbers."""
    means = [e.get("mean", {}) for e in data["variants"].values()]
    y_col = next((c for c in ("forget_known_mc_share", "forget_eval_dlogp") if any(c in m for m in means)), None)
    x_col = next((c for c in ("neighbours_unseen_abs_dlogp", "neighbours_abs_dlogp") if any(c in m for m in means)),
                 None)
    entries = {n: e for n, e in data["variants"].items() if {x_col, y_col} <= set(e.get("mean", {}))}
    if not entries:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for name, entry in entries.items():
        x, y = entry["mean"][x_col], entry["mean"][y_col]
        xerr, yerr = _bar(entry, x_col, x), _bar(entry, y_col, y)
        ax.errorbar([x], [y], xerr=None if xerr is None else [[xerr[0]], [xerr[1]]],
                    yerr=None if yerr is None else [[yerr[0]], [yerr[1]]], fmt="o", capsize=3, label=name)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if data.get("chance_share") is not None and y_col == "forget_known_mc_share":
        ax.axhline(data["chance_share"], color="grey", ls="--", lw=1, label="chance share")
    seeds = len(data["settings"]["seeds"])
    bars = "sd over seeds" if seeds > 1 else "95% bootstrap interval over prompts (one seed)"
    ax.set(xlabel=f"{'unseen ' if 'unseen' in x_col else ''}neighbours: mean |change in answer log-prob| (nats)",
           ylabel="concept's MC share, base-known prompts" if y_col == "forget_known_mc_share"
           else "mean change of the forget_eval answer log-prob (nats)",
           title=f"forgetting vs locality, {seeds} seed(s), {data['settings']['steps']} steps; bars: {bars}")
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)
    return True


def ablation_figure(path: Path, result: dict) -> bool:
    """Mean change of the answer log-prob per set: the top units vs random units of the same layers (mean and
    sd over the random draws)."""
    sets = {name: s for name, s in result["sets"].items() if s.get("n")}
    if not sets:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.9 * len(sets) + 2.5, 4))
    x = range(len(sets))
    top = [s["top"]["mean_change"] for s in sets.values()]
    rand = [s["random"]["mean_change"] for s in sets.values()]
    sd = [s["random"]["sd_change"] or 0.0 for s in sets.values()]
    ax.bar([i - 0.2 for i in x], top, 0.4, color=TOP, label=f"top {result['units']} units of the mask")
    ax.bar([i + 0.2 for i in x], rand, 0.4, yerr=sd, capsize=3, color=RANDOM,
           label=f"{result['units']} random units, same layers ({result['draws']} draws)")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(list(x), [f"{name}\n(n={s['n']})" for name, s in sets.items()])
    ax.set(ylabel="mean change of the answer log-prob (nats)",
           title=f"{result['ablation']}-ablation at {result['positions']} positions, layers {result['layers']}")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
    return True
