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


def rsa_figure(per_kind: dict[str, list[float | None]], pvalues: dict[str, list[float | None]], best: int,
               path: Path, title: str) -> None:
    """RSA (Spearman rho) per layer for each activation kind; filled markers: permutation p < 0.05."""
    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    for kind, values in per_kind.items():
        y = np.array([np.nan if v is None else v for v in values], dtype=float)
        x = np.arange(len(y))
        line, = ax.plot(x, y, marker="o", mfc="white", label=f"{kind} activations")
        sig = np.array([p is not None and p < 0.05 for p in pvalues.get(kind, [None] * len(y))])
        if sig.any():
            ax.plot(x[sig], y[sig], "o", color=line.get_color(), label=f"{kind}: permutation p < 0.05")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(best, color="grey", ls="--", lw=0.8, label=f"best layer ({best})")
    ax.set_xlabel("layer")
    ax.set_ylabel("RSA: Spearman ρ (semantic vs activation similarity)")
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
