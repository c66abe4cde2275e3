"""The user directory: `$AGMASK_HOME`, default `~/.cache/agmask` (model cache, tmp files)."""
import os
from pathlib import Path


def agmask_home() -> Path:
    """Resolve the user directory from the environment every time (tests point it at tmp_path)."""
    return Path(os.environ.get("AGMASK_HOME") or Path.home() / ".cache" / "agmask").expanduser()
