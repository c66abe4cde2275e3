"""`agmask run` and one command per stage; `agmask STAGE --help` lists every option of that stage."""
from __future__ import annotations

import functools

import click

from agmask.cli.options import build_config, run_options


def _is_main() -> bool:
    from agmask.distributed import is_main

    return is_main()


def _reporter(quiet: bool):
    from agmask.progress import Reporter

    if quiet:  # transformers' own bars too (e.g. "Loading weights"): this process is the one command
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return Reporter(enabled=not quiet)


class StageCommand(click.Command):
    """A stage's command: its --help ends with the stage's own options (type, default, help)."""

    def __init__(self, *args, stage: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.stage = stage

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from agmask.config import option_rows
        from agmask.pipeline import stage_module

        rows = option_rows(stage_module(self.stage))  # imports the stage (and torch): only for --help
        with formatter.section(f"Stage options (--set {self.stage}.OPTION=VALUE; value in YAML, e.g. 20, 1e-3, "
                               "[1, 2], null)"):
            if not rows:
                formatter.write_text("none")
            formatter.write_dl([(name, f"{kind}. {help_text}" if help_text else kind) for name, kind, help_text in rows])
        super().format_epilog(ctx, formatter)


class RunCommand(click.Command):
    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from agmask.pipeline import OPTIONAL_STAGES, STAGES

        with formatter.section("Stage options"):
            formatter.write_text(f"--set STAGE.OPTION=VALUE sets one stage's option; `agmask STAGE --help` lists "
                                 f"each stage's options with type, default and help. Stages: {', '.join(STAGES)}"
                                 + (f"; optional (with --with): {', '.join(OPTIONAL_STAGES)}" if OPTIONAL_STAGES
                                    else "") + ".")


@click.command("run", cls=RunCommand)
@run_options
@click.option("--with", "extra_stages", multiple=True, metavar="STAGE",
              help="Also run an optional stage (repeatable); `agmask run` runs only the default stages.")
def run_command(extra_stages: tuple[str, ...], **opts) -> None:
    """Run every stage (resuming finished ones); several --concept unlearn them one after another."""
    from agmask.cli.summary import print_run_summary
    from agmask.pipeline import OPTIONAL_STAGES, STAGES, run_pipeline
    from agmask.config import nearest
    from agmask.errors import AgmaskError

    for name in extra_stages:
        if name not in OPTIONAL_STAGES:
            hint = nearest(name, OPTIONAL_STAGES) or (f" (optional stages: {', '.join(OPTIONAL_STAGES)})"
                                                      if OPTIONAL_STAGES else " (there are none)")
            raise AgmaskError(f"--with {name}: not an optional stage{hint}")
    cfg = build_config(**opts)
    run_dirs = run_pipeline(cfg, stages=[*STAGES, *extra_stages], reporter=_reporter(opts["quiet"]))
    for run_dir in run_dirs if _is_main() else []:  # several processes: one summary
        print_run_summary(run_dir)


# Stage options that also get a flag of their own on the stage's command: `agmask tune --trials 8` is
# `agmask tune --set tune.trials=8` (a --set of the same option wins).
OPTION_FLAGS: dict[str, dict[str, str]] = {
    "tune": {"trials": "Trials the search runs in all (tune.trials): raise it to continue a search."},
}


def _option_flags(name: str):
    """Click options for the stage's OPTION_FLAGS, each an integer that defaults to the stage's own setting."""
    flags = [click.option(f"--{option.replace('_', '-')}", f"flag_{option}", type=click.IntRange(min=1), default=None,
                          help=help_text) for option, help_text in OPTION_FLAGS.get(name, {}).items()]
    return lambda fn: functools.reduce(lambda f, d: d(f), reversed(flags), fn)


def _flags_as_sets(name: str, opts: dict) -> dict:
    """Move each given flag into --set STAGE.OPTION=VALUE, before the user's own --set ones."""
    sets = tuple(f"{name}.{option}={value}" for option in OPTION_FLAGS.get(name, {})
                 if (value := opts.pop(f"flag_{option}", None)) is not None)
    return {**opts, "sets": sets + tuple(opts["sets"])}


def _stage_command(name: str, help_text: str) -> click.Command:
    @click.command(name, help=help_text, cls=StageCommand, stage=name)
    @run_options
    @_option_flags(name)
    def command(**opts) -> None:
        from agmask.cli.summary import print_run_summary
        from agmask.pipeline import run_pipeline

        opts = _flags_as_sets(name, opts)
        cfg = build_config(**opts)
        for run_dir in run_pipeline(cfg, stages=[name], reporter=_reporter(opts["quiet"])):
            if _is_main():  # several processes: one summary
                print_run_summary(run_dir, stage=name)

    return command


def _stage_summary(name: str) -> str:
    """First docstring line of a stage module, read without importing it (keeps `agmask --help` instant)."""
    import ast
    import importlib.util
    import sys

    loaded = sys.modules.get(f"agmask.stages.{name}")
    if loaded is not None:  # already imported (or registered in memory)
        doc = loaded.__doc__ or name
    else:
        spec = importlib.util.find_spec(f"agmask.stages.{name}")
        with open(spec.origin, encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read())) or name
    return doc.strip().splitlines()[0]


def register_stage_commands(group: click.Group) -> None:
    from agmask.pipeline import all_stages

    for name in all_stages():
        if name in group.commands:  # a dedicated command (e.g. `report`) already exists
            continue
        group.add_command(_stage_command(name, _stage_summary(name)))
