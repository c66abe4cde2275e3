"""Loss curves of an unlearning run (seed figure 9)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from agmask.files import save_figure  # noqa: E402


def loss_curves(path: Path, rows: list[dict], title: str) -> None:
    keys = [k for k in rows[0] if k not in ("step", "seconds", "grad_norm")]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, key in zip(axes[0], keys):
        ax.plot(steps, [r[key] for r in rows], "o-", markersize=3)
        ax.set(xlabel="step", title=key)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    save_figure(fig, path)
