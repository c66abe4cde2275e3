"""Evaluation figures, drawn from metrics.json alone (so they can be redrawn without a model)."""
from __future__ import annotations

from pathlib import Path

from agmask.files import save_figure

BASE, ADAPTED = "#4C72B0", "#DD8452"
SET_METRICS = (("forget_efficacy", "forget_eval"), ("probe_recall", "probes"), ("locality", "neighbors"),
               ("retain_utility", "retain_eval"))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _set_rows(metrics: dict) -> list[tuple[str, dict]]:
    rows = [(label, metrics[name]) for name, label in SET_METRICS if name in metrics and metrics[name].get("n")]
    for fam, value in (metrics.get("adversarial", {}).get("families") or {}).items():
        rows.append((f"adv: {fam}", value))
    return rows


def before_after(metrics: dict, path: Path) -> bool:
    rows = _set_rows(metrics)
    if not rows:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    panels = (("mean_answer_logprob", "mean answer log-prob (nats)", rows),
              ("mc_share", "multiple-choice share of the answer", [r for r in rows if r[1]["base"].get("mc_share") is not None]))
    for ax, (key, title, data) in zip(axes, panels):
        x = range(len(data))
        ax.bar([i - 0.2 for i in x], [d["base"][key] for _, d in data], 0.4, label="base", color=BASE)
        ax.bar([i + 0.2 for i in x], [d["adapted"][key] for _, d in data], 0.4, label="unlearned", color=ADAPTED)
        ax.set_xticks(list(x), [name for name, _ in data], rotation=35, ha="right", fontsize=8)
        ax.set_title(title)
        ax.axhline(0, color="black", lw=0.6)
        ax.legend(fontsize=8)
    fig.suptitle("Before / after unlearning, per evaluation set")
    save_figure(fig, path)
    return True


def activation_shift(metrics: dict, path: Path) -> bool:
    value = metrics.get("activation_shift")
    if not value:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for (name, data), color in zip(value["sets"].items(), ("#C44E52", "#55A868")):
        ax.plot(range(len(data["per_layer"])), data["per_layer"], marker="o", ms=3, label=name, color=color)
    ax.set_xlabel("layer")
    ax.set_ylabel("||h_unlearned - h_base|| / ||h_base||")
    ax.set_title("Activation shift per layer (residual, last prompt token)")
    ax.legend()
    save_figure(fig, path)
    return True


def pca(metrics: dict, path: Path) -> bool:
    value = (metrics.get("activation_shift") or {}).get("pca")
    if not value:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5))
    for key, pts in value["points"].items():
        which, set_name = key.split("/")
        base = which == "base"  # unlearned points hollow and larger, so they stay visible on top of the base
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=28 if base else 60, alpha=0.85,
                   facecolors=BASE if base else "none", edgecolors=BASE if base else ADAPTED, linewidths=1.4,
                   marker="o" if set_name == "forget_eval" else "^",
                   label=f"{'base' if base else 'unlearned'} · {set_name}")
    ratio = value["explained_variance_ratio"]
    ax.set_xlabel(f"PC1 ({ratio[0]:.0%})")
    ax.set_ylabel(f"PC2 ({ratio[1]:.0%})")
    ax.set_title(f"PCA of last-token residuals, layer {value['layer']}")
    ax.legend(fontsize=8)
    save_figure(fig, path)
    return True


def logit_lens(metrics: dict, path: Path) -> bool:
    value = metrics.get("logit_lens")
    if not value:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for (name, data), color in zip(value["sets"].items(), ("#C44E52", "#8172B3", "#55A868")):
        for which, style in (("base", "-"), ("adapted", "--")):
            curve = data[which]["per_layer_mean_log10_rank"]
            ax.plot(range(len(curve)), curve, style, color=color,
                    label=f"{name} ({'base' if which == 'base' else 'unlearned'})")
    ax.set_xlabel("layer")
    ax.set_ylabel("mean log10 rank of the answer's first token")
    ax.set_title("Logit lens (final norm + lm_head on each layer)")
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return True


FIGURES = {"before_after.png": before_after, "activation_shift.png": activation_shift, "pca.png": pca,
           "logit_lens.png": logit_lens}


def write_figures(metrics: dict, out_dir: Path) -> list[str]:
    """Draw every figure whose metrics exist; returns the file names written."""
    return [name for name, draw in FIGURES.items() if draw(metrics, Path(out_dir) / name)]
