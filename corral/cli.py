"""The `corral` command: Ollama's CLI habits (`corral serve`, `corral --version`)."""

from __future__ import annotations

import typer
from rich.console import Console

from corral.launcher import Launcher
from corral.nats_server import NatsServerError
from services.config import ConfigError, load_settings
from services.version import corral_version

app = typer.Typer(add_completion=False, help="corral: an Ollama-compatible model server on NATS.")
console = Console(stderr=True)


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    show_version: bool = typer.Option(False, "--version", "-v", help="Show the version."),
) -> None:
    if show_version:
        typer.echo(f"corral version is {corral_version()}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


@app.command()
def serve() -> None:
    """Start corral: a local NATS (unless NATS_URL is set), the four services and a CPU worker."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(2) from exc
    launcher = Launcher(settings)

    def started(url: str) -> None:
        typer.echo(f"corral is listening on {url} (NATS {launcher.env['NATS_URL']})")
        typer.echo("Press Ctrl-C to stop.")

    try:
        launcher.run_until_stopped(started)
    except (NatsServerError, RuntimeError) as exc:
        console.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(1) from exc
