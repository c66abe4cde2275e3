"""Attribution figures (seed figures 3-5, 7-8). Each takes arrays, returns nothing, writes one PNG."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from agmask.files import save_figure  # noqa: E402


def layer_sensitivity(path: Path, forget: torch.Tensor, retain: torch.Tensor, fisher_f: torch.Tensor,
                      fisher_r: torch.Tensor) -> None:
    layers = np.arange(len(forget))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    ax1.plot(layers, forget.numpy(), "o-", label="forget_train")
    ax1.plot(layers, retain.numpy(), "s--", label="retain_train")
    ax1.set(xlabel="layer", ylabel="mean ||dL/da|| per sample", title="Layerwise gradient sensitivity")
    ax1.legend()
    ax2.plot(layers, fisher_f.numpy(), "o-", label="forget_train")
    ax2.plot(layers, fisher_r.numpy(), "s--", label="retain_train")
    ax2.set(xlabel="layer", ylabel="mean Fisher per neuron", title="Fisher information per layer", yscale="log")
    ax2.legend()
    save_figure(fig, path)


def top_neuron_heatmap(path: Path, scores: torch.Tensor, title: str, label: str, per_layer: int = 32) -> None:
    """Rows: layers; columns: that layer's top neurons by score (sorted), colour: score."""
    top = torch.sort(scores, dim=1, descending=True).values[:, :per_layer].numpy()  # (L, k)
    fig, ax = plt.subplots(figsize=(10, 0.25 * len(top) + 1.5))
    im = ax.imshow(top, aspect="auto", cmap="magma", norm=matplotlib.colors.LogNorm(vmin=max(top[top > 0].min(), 1e-12)
                                                                                   if (top > 0).any() else 1e-12))
    ax.set(xlabel=f"top-{per_layer} neurons of the layer (by score)", ylabel="layer", title=title)
    fig.colorbar(im, ax=ax, label=label)
    save_figure(fig, path)


def layer_correlation(path: Path, curves: dict[str, np.ndarray]) -> None:
    """Per-layer curves (each scaled to [0, 1]) and their Pearson correlation matrix."""
    names = list(curves)
    data = np.stack([curves[n] for n in names])  # (K, L)
    scaled = (data - data.min(1, keepdims=True)) / np.ptp(data, axis=1, keepdims=True).clip(min=1e-12)
    corr = np.corrcoef(data)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    for n, row in zip(names, scaled):
        ax1.plot(row, "o-", label=n, markersize=3)
    ax1.set(xlabel="layer", ylabel="scaled to [0, 1]", title="Layerwise saliency, Fisher and activation similarity")
    ax1.legend(fontsize=8)
    im = ax2.imshow(corr, vmin=-1, vmax=1, cmap="coolwarm")
    ax2.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax2.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            ax2.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax2.set_title("Pearson correlation across layers")
    fig.colorbar(im, ax=ax2)
    save_figure(fig, path)
