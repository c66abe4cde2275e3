"""`docs/results.yaml`: which run directories go into docs/RESULTS.md, each with its label and purpose.

    runs:
      - run_dir: runs/full-inception          # relative paths are read from the current directory
        label: validation                     # test | validation | placeholder | training (LABELS below)
        purpose: the shipped defaults on the default model, full budget
        command: agmask run --budget full --run-dir runs/full-inception   # optional: how to make it
        title: Default model, inception, full budget                      # optional
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agmask.errors import AgmaskError

# What a label promises about the numbers under it.
LABELS = {
    "test": "the evaluation sets read once, for a setting chosen on training data only",
    "validation": "evaluation-set numbers that were looked at while choosing the setting: not a held-out estimate",
    "placeholder": "a tiny random model: shows the layout of this page, measures nothing",
    "training": "training-set numbers only (half B of `agmask tune`): no evaluation set was read",
}


class RunEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: Path = Field(description="the run directory (relative: from the directory `agmask results` runs in)")
    label: Literal[tuple(LABELS)]  # type: ignore[valid-type]
    purpose: str = Field(min_length=1, description="one line: what this run shows")
    title: str | None = Field(None, description="the section heading (default: the run directory)")
    command: str | None = Field(None, description="how to make the run directory; shown while it does not exist "
                                "(once it does, the command its manifest recorded is shown instead)")

    @field_validator("purpose", "title")
    @classmethod
    def _one_line(cls, v: str | None) -> str | None:
        if v is not None and "\n" in v.strip():
            raise ValueError("must be one line")
        return v.strip() if v is not None else v

    @property
    def heading(self) -> str:
        return self.title or str(self.run_dir)


class ResultsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    runs: list[RunEntry] = Field(min_length=1)


def _where(loc: tuple, data) -> str:
    """pydantic's loc (('runs', 2, 'label')) as `runs[2].label`, with the run directory when there is one."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    if len(loc) > 1 and loc[0] == "runs" and isinstance(loc[1], int):
        run = (data.get("runs") or [None] * (loc[1] + 1))[loc[1]]
        if isinstance(run, dict) and run.get("run_dir"):
            out += f" (run {run['run_dir']})"
    return out or "(top level)"


def load_results_spec(path: Path) -> ResultsSpec:
    """Read and validate the list; every error is one line naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise AgmaskError(f"{path} not found: list the run directories there (see docs/results.yaml in the "
                          "repository), or give them on the command line: agmask results RUN_DIR ...")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise AgmaskError(f"{path}: not valid YAML{f' at line {mark.line + 1}' if mark else ''}: "
                          f"{getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise AgmaskError(f"{path}: expected a mapping with a `runs` list, got {type(data).__name__}")
    try:
        return ResultsSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise AgmaskError(f"{path}: {_where(err['loc'], data)}: {err['msg'].removeprefix('Value error, ')}") from None


def entries_from_dirs(run_dirs: list[Path], label: str, purpose: str) -> ResultsSpec:
    """The list for run directories given on the command line (one label and purpose for all)."""
    try:
        return ResultsSpec(runs=[RunEntry(run_dir=d, label=label, purpose=purpose) for d in run_dirs])
    except ValidationError as e:
        err = e.errors()[0]
        raise AgmaskError(f"--{err['loc'][-1]}: {err['msg'].removeprefix('Value error, ')}") from None
