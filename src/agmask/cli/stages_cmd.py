"""`agmask run` and one command per stage."""
from __future__ import annotations

import click

from agmask.cli.options import build_config, run_options


def _is_main() -> bool:
    from agmask.distributed import is_main

    return is_main()


def _reporter(quiet: bool):
    from agmask.progress import Reporter

    return Reporter(enabled=not quiet)


@click.command("run")
@run_options
def run_command(**opts) -> None:
    """Run every stage (resuming finished ones); several --concept unlearn them one after another."""
    from agmask.cli.summary import print_run_summary
    from agmask.pipeline import run_pipeline

    cfg = build_config(**opts)
    run_dirs = run_pipeline(cfg, reporter=_reporter(opts["quiet"]))
    for run_dir in run_dirs if _is_main() else []:  # several processes: one summary
        print_run_summary(run_dir)


def _stage_command(name: str, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @run_options
    def command(**opts) -> None:
        from agmask.cli.summary import print_run_summary
        from agmask.pipeline import run_pipeline

        cfg = build_config(**opts)
        for run_dir in run_pipeline(cfg, stages=[name], reporter=_reporter(opts["quiet"])):
            if _is_main():  # several processes: one summary
                print_run_summary(run_dir, stage=name)

    return command


def _stage_summary(name: str) -> str:
    """First docstring line of a stage module, read without importing it (keeps `agmask --help` instant)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(f"agmask.stages.{name}")
    with open(spec.origin, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or name
    return doc.strip().splitlines()[0]


def register_stage_commands(group: click.Group) -> None:
    from agmask.pipeline import STAGES

    for name in STAGES:
        if name in group.commands:  # a dedicated command (e.g. `report`) already exists
            continue
        group.add_command(_stage_command(name, _stage_summary(name)))
