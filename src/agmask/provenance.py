"""Where a run's results came from: the command that ran a stage and the source it ran.

The driver records both in every DONE marker it writes and in the run's manifest.json (the latest invocation
that completed a stage), so `agmask results` can name, beside each table, what produced it.
"""
from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from agmask import __version__

DIRTY = "+dirty"


def _git(where: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=20, check=True)
    return out.stdout.strip()


def source_commit(source: Path | None = None) -> str:
    """`git rev-parse HEAD` of the checkout that holds agmask's source, with `+dirty` when the checkout has
    changes (tracked edits or untracked files not ignored); `agmask==VERSION` when the source is not a tracked
    part of a git checkout (an installed package, or a copy without git)."""
    source = Path(source) if source is not None else Path(__file__).resolve().parent
    try:
        if not _git(source, "ls-files", "--", "."):  # e.g. site-packages inside a repository's ignored .venv
            return f"agmask=={__version__}"
        head = _git(source, "rev-parse", "HEAD")
        dirty = bool(_git(source, "status", "--porcelain", "--", ":/"))
    except (OSError, subprocess.SubprocessError):  # no git, not a checkout, no commit yet
        return f"agmask=={__version__}"
    return head + (DIRTY if dirty else "")


def api_call(cfg, stages: Iterable[str] | None = None) -> str:
    """The Python call that reproduces a run: `run_pipeline(RunConfig(...), stages=[...])`, with only the
    RunConfig fields that differ from their defaults."""
    fields = cfg.model_dump(mode="json", exclude_defaults=True, exclude={"command"})
    call = "run_pipeline(RunConfig(" + ", ".join(f"{key}={value!r}" for key, value in fields.items()) + ")"
    if stages is not None:
        call += f", stages={list(stages)!r}"
    return call + ")"
