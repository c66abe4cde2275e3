"""`agmask` entry point: user mistakes end in one line on stderr and a non-zero exit, never a traceback."""
from __future__ import annotations

import shlex
import sys

import click

from agmask import __version__
from agmask.cli.models_cmd import models_command
from agmask.cli.report_cmd import report_command
from agmask.cli.results_cmd import results_command
from agmask.cli.stages_cmd import register_stage_commands, run_command
from agmask.errors import AgmaskError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agmask")
def cli() -> None:
    """Make a language model forget one concept with an activation-guided masked LoRA adapter."""


cli.add_command(run_command)
cli.add_command(models_command)
cli.add_command(results_command)
cli.add_command(report_command)  # before the stage commands: it replaces the generic one
register_stage_commands(cli)


def main(argv: list[str] | None = None) -> int:
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    try:  # the invocation travels in the context: the driver records it with the results
        cli.main(args=args, prog_name="agmask", standalone_mode=False, obj={"command": shlex.join(["agmask", *args])})
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as e:  # usage errors: one line
        click.echo(f"error: {e.format_message()}", err=True)
        return e.exit_code
    except AgmaskError as e:
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted; finished stages are kept, rerun to resume", err=True)
        return 130
    except MemoryError:
        click.echo("error: out of memory; try --budget demo, a smaller --set *.batch_size, or a smaller model", err=True)
        return 1
    except OSError as e:  # permission denied, disk full, a path under a file: one line, never a traceback
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"error: {e.strerror or e}{where}; finished stages are kept, fix this and rerun to resume", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
