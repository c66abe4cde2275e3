"""Similarity figures (seed figure 6): semantic vs activation matrices, and RSA per layer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from agmask.files import save_figure
from agmask.similarity.rsa import upper


def _set_ticks(ax, groups: list[str]) -> None:
    """Label each prompt set once, at the middle of its block, and draw block boundaries."""
    bounds, names, start = [], [], 0
    for i in range(1, len(groups) + 1):
        if i == len(groups) or groups[i] != groups[start]:
            bounds.append((start, i))
            names.append(groups[start])
            start = i
    centers = [(a + b - 1) / 2 for a, b in bounds]
    ax.set_xticks(centers, names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(centers, names, fontsize=8)
    for _, b in bounds[:-1]:
        ax.axhline(b - 0.5, color="white", lw=1)
        ax.axvline(b - 0.5, color="white", lw=1)


def matrices_figure(panels: list[tuple[str, np.ndarray]], groups: list[str], path: Path, title: str) -> None:
    """Side-by-side (P, P) similarity matrices; each panel scaled to its own off-diagonal range."""
    fig = Figure(figsize=(5.2 * len(panels), 5.0))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (name, m) in zip(axes, panels):
        off = upper(m)
        lo, hi = np.percentile(off, [2, 98]) if len(off) else (0.0, 1.0)
        im = ax.imshow(m, cmap="magma", vmin=lo, vmax=max(hi, lo + 1e-6), interpolation="nearest")
        _set_ticks(ax, groups)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("prompt")
        ax.set_ylabel("prompt")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)


def rsa_figure(layers: dict[str, list[dict]], primary: str, best: int, path: Path, title: str) -> None:
    """RSA (Spearman rho) per layer: over all prompts for each activation kind (solid; filled markers:
    permutation p < 0.05), and within each prompt set for the primary kind (dashed)."""
    fig = Figure(figsize=(10, 5))
    ax = fig.subplots()

    def curve(entries: list[dict | None], label: str, style: str) -> None:
        y = np.array([np.nan if e is None or e["rsa"] is None else e["rsa"] for e in entries], dtype=float)
        x = np.arange(len(y))
        line, = ax.plot(x, y, style, marker="o", ms=4, mfc="white", label=label)
        sig = np.array([e is not None and e["p_value"] is not None and e["p_value"] < 0.05 for e in entries])
        if sig.any():
            ax.plot(x[sig], y[sig], "o", ms=4, color=line.get_color())

    for kind, entries in layers.items():
        curve(entries, f"{kind} activations, all prompts", "-")
    for group in layers[primary][0]["within"]:
        curve([e["within"].get(group) for e in layers[primary]], f"{primary}, within {group}", "--")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(best, color="grey", ls=":", lw=0.8, label=f"best layer ({best})")
    ax.set_xlabel("layer")
    ax.set_ylabel("RSA: Spearman ρ (semantic vs activation similarity)")
    ax.set_title(f"{title}\nfilled markers: permutation p < 0.05", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_figure(fig, path)
