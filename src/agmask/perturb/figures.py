"""Perturbation figures (seed figures 1-2), drawn from `outputs.jsonl` rows and `stability.json` only.

Figures are built on `matplotlib.figure.Figure` directly (Agg rendering, no pyplot state).
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from agmask.files import save_figure
from agmask.perturb.metrics import GREEDY, family_order, top_answers


def _plain(text: str) -> str:
    """Text the default font can draw: control characters and CJK/other far-range glyphs become '?'."""
    return "".join(c if c.isprintable() and ord(c) < 0x2E80 else "?" for c in text)


def _cut(text: str, n: int) -> str:
    text = " ".join(_plain(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _label(answer: str) -> str:
    return "(empty)" if answer == "" else _cut(answer, 28)


def stability_figure(stab: dict, chance: float | None, path: Path, title: str) -> None:
    """Per family: consistency, hit rate and MC share (mean ± std over prompts); answer log-prob ± std."""
    fams = list(stab["families"])
    s = stab["families"]
    x = np.arange(len(fams))
    fig = Figure(figsize=(max(8.0, 1.0 * len(fams) + 4), 7.5))
    ax, ax_lp = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    width = 0.27
    series = [("answer consistency (pooled)", [s[f]["consistency"] for f in fams], None),
              ("concept hit rate", [s[f]["hit_rate_prompt_mean"] for f in fams], [s[f]["hit_rate_prompt_std"] for f in fams]),
              ("concept MC share", [s[f]["mc_share_mean"] for f in fams], [s[f]["mc_share_std"] for f in fams])]
    for k, (name, vals, err) in enumerate(series):
        v = np.array([np.nan if a is None else a for a in vals], dtype=float)
        e = None if err is None else np.array([0.0 if a is None else a for a in err], dtype=float)
        if e is not None:  # a share stays in [0, 1]: clip the ± std bars there
            e = np.stack([np.minimum(e, np.nan_to_num(v)), np.minimum(e, 1 - np.nan_to_num(v))])
        ax.bar(x + (k - 1) * width, v, width, yerr=e, capsize=3, label=name)
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label=f"MC chance (1/{round(1 / chance)})")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    lp = np.array([np.nan if s[f]["answer_logprob_mean"] is None else s[f]["answer_logprob_mean"] for f in fams])
    lp_err = np.array([0.0 if s[f]["answer_logprob_std"] is None else s[f]["answer_logprob_std"] for f in fams])
    ax_lp.bar(x, lp, 0.5, yerr=lp_err, capsize=3, color="tab:purple")
    ax_lp.set_ylabel("concept answer log-prob\n(mean ± std over prompts)")
    ax_lp.grid(axis="y", alpha=0.3)
    ax_lp.set_xticks(x, [f"{f}\n(n={s[f]['n_prompts']})" for f in fams], rotation=30, ha="right", fontsize=9)
    ax_lp.set_xlabel("perturbation family")
    fig.tight_layout()
    save_figure(fig, path)


def _row_label(fam: str, base: int | None, prompt: str, lang_seen: dict[str, int]) -> str:
    if base is not None:
        return f"Q{base} · {fam}"
    lang_seen[fam] = lang_seen.get(fam, 0) + 1
    return f"{fam} #{lang_seen[fam]} · {_cut(prompt, 30)}"


def heatmap_figure(rows: list[dict], path: Path, title: str, k: int = 10) -> None:
    """Rows = perturbed prompts (base prompt × family, then language items); columns = the k most
    frequent extracted answers + (other); cell = share of that prompt's generations (greedy + samples)."""
    top = [a for a, _ in top_answers(rows, k)]
    col = {a: i for i, a in enumerate(top)}
    order = family_order([r["family"] for r in rows])
    prompts: dict[int, dict] = {}
    for r in rows:
        prompts.setdefault(r["prompt_index"], {"family": r["family"], "base": r["base_index"],
                                               "prompt": r["prompt"], "answers": []})["answers"].append(r["answer"])
    keyed = sorted(prompts.items(), key=lambda kv: (kv[1]["base"] is None, kv[1]["base"] or 0,
                                                    order.index(kv[1]["family"]), kv[0]))
    counts = np.zeros((len(keyed), len(top) + 1))  # (prompts, answers + other)
    labels, lang_seen = [], {}
    for i, (_, p) in enumerate(keyed):
        for a in p["answers"]:
            counts[i, col.get(a, len(top))] += 1
        labels.append(_row_label(p["family"], p["base"], p["prompt"], lang_seen))
    share = counts / counts.sum(1, keepdims=True).clip(min=1)
    n_rows, n_cols = share.shape
    fig = Figure(figsize=(3.5 + 0.75 * n_cols, 1.5 + 0.24 * n_rows))
    ax = fig.subplots()
    im = ax.imshow(share, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(n_cols), [_label(a) for a in top] + ["(other)"], rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), labels, fontsize=7)
    if n_rows * n_cols <= 900:
        for i in range(n_rows):
            for j in range(n_cols):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=6,
                            color="black" if share[i, j] > 0.6 else "white")
    # a line between base prompts (and before the language items)
    bases = [p["base"] for _, p in keyed]
    for i in range(1, n_rows):
        if bases[i] != bases[i - 1]:
            ax.axhline(i - 0.5, color="white", lw=1.2)
    ax.set_xlabel("extracted answer (most frequent first)")
    ax.set_ylabel("prompt (base question × perturbation family)")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="share of the prompt's generations (count in cell)")
    fig.tight_layout()
    save_figure(fig, path)


def examples_figure(rows: list[dict], path: Path, title: str) -> None:
    """Seed figure 1: one question in every wording, with its greedy answer and the concept's MC share.

    Shows the base question whose greedy answer varies most across families (ties: the first).
    """
    greedy = [r for r in rows if r["sample"] == GREEDY and r["base_index"] is not None]
    if not greedy:
        return
    by_base: dict[int, list[dict]] = {}
    for r in greedy:
        by_base.setdefault(r["base_index"], []).append(r)
    base = max(sorted(by_base), key=lambda b: len({r["answer"] for r in by_base[b]}))
    order = family_order([r["family"] for r in by_base[base]])
    chosen = sorted(by_base[base], key=lambda r: order.index(r["family"]))
    cells = [[r["family"], textwrap.fill(_plain(r["prompt"]), 70, max_lines=3, placeholder=" …"),
              textwrap.fill(_plain(r["answer"]) or "(empty)", 30, max_lines=2, placeholder=" …"),
              "-" if r["mc_share"] is None else f"{r['mc_share']:.2f}"] for r in chosen]
    fig = Figure(figsize=(13, 0.62 * len(cells) + 1.2))
    ax = fig.subplots()
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=["family", "prompt", "greedy answer", "concept MC share"],
                     colWidths=[0.11, 0.52, 0.25, 0.12], loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 3.0)
    ax.set_title(f"{title} (question Q{base})")
    save_figure(fig, path)


def recommend_figure(block: dict, path: Path, title: str) -> None:
    """Recommendation requests under perturbation. Left: per request, the consistency of its recommended title
    across its wordings (greedy title, every generation, top candidate of the MC view), distinct titles on top.
    Right: per family, the flip rate of the greedy title vs the original wording and the concept's MC share."""
    views = (("greedy", "greedy title"), ("all", "every generation"), ("mc_top", "top MC candidate"))
    requests = block["per_request"]
    keys = list(requests)
    x = np.arange(len(keys))
    fig = Figure(figsize=(max(11.0, 1.3 * len(keys) + 8), 5.0))
    ax, ax_fam = fig.subplots(1, 2, gridspec_kw={"width_ratios": [max(len(keys), 2), 3]})
    width = 0.27
    for k, (view, label) in enumerate(views):
        vals = [np.nan if requests[q][view]["consistency"] is None else requests[q][view]["consistency"] for q in keys]
        bars = ax.bar(x + (k - 1) * width, vals, width, label=label)
        for bar, q in zip(bars, keys):
            ax.annotate(str(requests[q][view]["distinct"]), (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [f"R{q}\n{_cut(requests[q]['prompt'], 24)}" for q in keys], fontsize=7)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("consistency across wordings (modal share)")
    ax.set_title("per request (number on a bar: distinct titles)", fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
    ax.grid(axis="y", alpha=0.3)
    fams = [f for f in block["families"]]
    fx = np.arange(len(fams))
    flips = [np.nan if block["families"][f]["flip_rate"] is None else block["families"][f]["flip_rate"] for f in fams]
    share = [np.nan if block["families"][f]["mc_share_mean"] is None else block["families"][f]["mc_share_mean"]
             for f in fams]
    ax_fam.bar(fx - 0.2, flips, 0.4, label="greedy title flips vs original", color="tab:red")
    ax_fam.bar(fx + 0.2, share, 0.4, label="concept MC share", color="tab:green")
    if block.get("mc_chance"):
        ax_fam.axhline(block["mc_chance"], color="grey", ls="--", lw=1, label="MC chance")
    ax_fam.set_xticks(fx, fams, rotation=35, ha="right", fontsize=8)
    ax_fam.set_ylim(0, 1.05)
    ax_fam.set_title("per perturbation family", fontsize=9)
    ax_fam.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3)
    ax_fam.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
