"""Options shared by every command, and how they become a RunConfig."""
from __future__ import annotations

import functools
from pathlib import Path

import click
import yaml

from agmask.errors import AgmaskError


def _parse_set(values: tuple[str, ...]) -> dict[str, dict]:
    """`--set unlearn.steps=20` -> {"unlearn": {"steps": 20}} (values parsed as YAML: 20, 1e-3, [1, 2], null)."""
    out: dict[str, dict] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        stage, dot, option = key.partition(".")
        if not sep or not dot or not stage or not option:
            raise AgmaskError(f"--set {item!r}: expected STAGE.OPTION=VALUE, e.g. --set unlearn.steps=20")
        try:
            out.setdefault(stage, {})[option] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise AgmaskError(f"--set {item!r}: the value is not valid YAML ({getattr(e, 'problem', e)})") from None
    return out


def run_options(fn):
    """--model --concept --run-dir --seed --device --budget --gradient-checkpointing --force --recipe --set --quiet."""
    decorators = [
        click.option("--model", default=None, help="Model spec: embedded:NAME, tiny:llama|qwen2, a .gguf file, a "
                     "local directory or a Hugging Face id. Default: the run dir's manifest, else the embedded default."),
        click.option("--concept", "concepts", multiple=True, help="Shipped concept name (e.g. inception) or YAML "
                     "path; repeat to unlearn several concepts one after another."),
        click.option("--run-dir", type=click.Path(path_type=Path), default=Path("runs/default"), show_default=True,
                     help="Run directory holding every artefact."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N, or auto."),
        click.option("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)."),
        click.option("--budget", type=click.Choice(["demo", "full"]), default="demo", show_default=True,
                     help="demo: minutes on 2 CPU cores; full: real runs."),
        click.option("--gradient-checkpointing", is_flag=True, help="Recompute decoder layers in the training "
                     "backward: less memory, same loss, ~30% more compute (never used by attribution)."),
        click.option("--force", is_flag=True, help="Rerun stages even if they are up to date."),
        click.option("--recipe", type=click.Choice(["auto", "defaults"]), default="auto", show_default=True,
                     help="auto: attribute, mask and unlearn use `agmask tune`'s choice (tune/choice.json, when "
                     "current) under your --set options; defaults: ignore it."),
        click.option("--set", "sets", multiple=True, metavar="STAGE.OPTION=VALUE", help="Override a stage option."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
    ]
    return functools.reduce(lambda f, d: d(f), reversed(decorators), fn)


def build_config(model, concepts, run_dir, seed, device, dtype, budget, force, sets, gradient_checkpointing=False,
                 recipe="auto", **_):
    """Explicit options win; otherwise the run dir's manifest names the model and concept."""
    from agmask.config import make_run_config
    from agmask.rundir import RunDir

    recorded = _recorded(RunDir(run_dir).manifest)
    if model is None:
        model = recorded.get("model", {}).get("spec")
    if not concepts and recorded.get("concept"):
        source = recorded["concept"]["source"]
        concepts = (source.removeprefix("shipped:"),)
    if not concepts and recorded.get("concepts"):
        concepts = tuple(recorded["concepts"])
    kwargs = dict(run_dir=Path(run_dir), seed=seed, device=device, dtype=dtype, budget=budget, force=force,
                  gradient_checkpointing=gradient_checkpointing, recipe=recipe, overrides=_parse_set(sets),
                  command=_invocation())
    if model:
        kwargs["model"] = model
    if concepts:
        kwargs["concepts"] = list(concepts)
    return make_run_config(**kwargs)


def _invocation() -> str | None:
    """The `agmask ...` command line `main` put in the click context (None when called some other way)."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj.get("command") if isinstance(obj, dict) else None


def _recorded(manifest_path: Path) -> dict:
    """The run dir's manifest, or {} when there is none (a damaged one is an error naming it)."""
    import json

    try:
        return json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AgmaskError(f"{manifest_path} cannot be read ({e}); move it away or use another --run-dir") from None
