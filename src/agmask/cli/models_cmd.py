"""`agmask models`: the embedded models and their state."""
from __future__ import annotations

import click


@click.command("models")
@click.option("--clear", metavar="NAME", default=None, help="Delete the cache of one embedded model.")
def models_command(clear: str | None) -> None:
    """List the embedded models: installed? cached? size."""
    from rich.console import Console
    from rich.table import Table

    from agmask.home import agmask_home
    from agmask.models import embedded
    from agmask.models.registry import DEFAULT_MODEL, EMBEDDED

    if clear:
        entry = embedded.lookup(clear)
        embedded.clear_cache(entry)
        click.echo(f"cleared the cache of {entry.spec}")
        return
    table = Table(title=f"embedded models (cache: {agmask_home() / 'models'})")
    for col in ("spec", "installed", "cached", "cache size", "sha256", "description"):
        table.add_column(col)
    for entry in EMBEDDED.values():
        cached = embedded.is_cached(entry)
        size = embedded.cache_size_bytes(entry) if cached else 0
        table.add_row(entry.spec + (" (default)" if entry.spec == DEFAULT_MODEL else ""),
                      "yes" if embedded.installed(entry) else f"no: {entry.install}",
                      "yes" if cached else "no", f"{size / 1e9:.2f} GB" if cached else "-",
                      entry.sha256[:12] + "…", entry.description)
    Console(width=160).print(table)
    click.echo("also accepted: tiny:llama, tiny:qwen2, a .gguf file, a local model directory, a Hugging Face id")
