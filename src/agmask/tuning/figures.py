"""tune/trials.png: forgetting against locality for every trial, the chosen one marked."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from agmask.files import save_figure  # noqa: E402


def trials_figure(path: Path, rows: list[dict], chosen: dict | None, title: str) -> None:
    """x: neighbour-type |change| on half B (locality; its 0.5-nat limit dashed), or the general prompts' |change|
    (0.2) when half B has no neighbour-type prompt; y: worst-lead median first-token rank (forgetting, log scale);
    filled: meets every constraint; the chosen trial ringed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    done = [r for r in rows if r.get("state") == "complete"]
    key, limit, what = "neighbour_abs", 0.5, "neighbour-type"
    if all(r["measurements"][key] is None for r in done):
        key, limit, what = "general_abs", 0.2, "general"
    for feasible, colour, label in ((True, "tab:green", "meets every constraint"),
                                    (False, "tab:red", "violates a constraint")):
        part = [r for r in done if r["feasible"] == feasible]
        xs = [r["measurements"][key] or 0.0 for r in part]
        ys = [max(r["measurements"]["worst_lead_rank"] or 1, 1) for r in part]
        ax.scatter(xs, ys, c=colour if feasible else "none", edgecolors=colour, s=42, label=f"{label} ({len(part)})")
        for r, x, y in zip(part, xs, ys):
            ax.annotate(str(r["trial"]), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    if chosen is not None:
        m = chosen["measurements"]
        ax.scatter([m[key] or 0.0], [max(m["worst_lead_rank"] or 1, 1)], s=220, facecolors="none",
                   edgecolors="black", linewidths=1.6, label=f"chosen: trial {chosen['trial']}")
    ax.axvline(limit, color="grey", ls="--", lw=0.8)
    ax.axhline(100, color="grey", ls=":", lw=0.8)
    ax.set_yscale("log")
    ax.set(xlabel=f"{what} retain |Δ log-prob| on half B (nats; limit {limit})",
           ylabel="worst-lead median first-token rank (half B)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)
