"""The `corral` command, with `ollama`'s verbs and output: serve, create, run, pull, push,
list/ls, ps, show, stop, rm, cp."""

from __future__ import annotations

import contextlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.core import TyperCommand

from corral import flags, tables, transfer
from corral.client import Client, ClientError
from corral.create import create as create_model
from corral.history import History
from corral.launcher import Launcher
from corral.modelfile import ModelfileError
from corral.nats_server import NatsServerError
from corral.repl import Repl
from corral.run import (
    RunOptions,
    Screen,
    apply_show,
    embed,
    generate,
    infer_think,
    load_model,
    print_loaded_messages,
    prompt_of,
    show_or_pull,
)
from corral.showinfo import model_summary
from services.config import ConfigError, load_settings, redact_url
from services.registry.names import InvalidName, parse_name
from services.version import corral_version

app = typer.Typer(add_completion=False, help="corral: an Ollama-compatible model server on NATS.")
console = Console(stderr=True)
INSECURE_HELP = "Use an insecure registry (plain http)."
NOT_YOURS = "you are not authorized to push to this namespace, create the model under a namespace you own"


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
        # The embedded server's URL carries its token: never print it.
        typer.echo(f"corral is listening on {url} (NATS {redact_url(launcher.env['NATS_URL'])})")
        typer.echo("Press Ctrl-C to stop.")

    try:
        launcher.run_until_stopped(started)
    except (NatsServerError, RuntimeError) as exc:
        console.print(f"[red]Error:[/red] {exc}", soft_wrap=True)  # one line, whatever its length
        raise typer.Exit(1) from exc


app.command("start", help="Start corral (as `serve`).")(serve)


def _client() -> Client:
    try:
        return Client()
    except ConfigError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    console.print(f"Error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@app.command("list")
def list_models(prefix: str = typer.Argument("", help="Only models whose name starts with this.")) -> None:
    """List models (NAME ID SIZE MODIFIED)."""
    try:
        models = _client().get("/api/tags")["models"]
    except ClientError as exc:
        _fail(str(exc))
    now = datetime.now(UTC)
    rows = [
        [m["name"], m["digest"][:12], tables.human_bytes(m["size"]),
         tables.human_time(tables.parse_time(m["modified_at"]), now)]
        for m in models
        if tables.named(m["name"], prefix, fold_case=True)
    ]  # fmt: skip
    typer.echo(tables.table(rows, ["NAME", "ID", "SIZE", "MODIFIED"]), nl=False)


app.command("ls", help="List models (as `list`).")(list_models)


@app.command()
def ps(prefix: str = typer.Argument("", help="Only models whose name starts with this.")) -> None:
    """List running models (NAME ID SIZE PROCESSOR CONTEXT UNTIL), and WAITING: requests queued
    for each model, when any are (models that only have waiting requests get a row too)."""
    client = _client()
    try:
        models = client.get("/api/ps")["models"]
    except ClientError as exc:
        _fail(str(exc))
    try:
        waiting = {m["name"]: m["waiting"] for m in client.get("/api/queue")["models"]}
    except ClientError:
        waiting = {}  # an older server, or no scheduler: the running models still show
    now = datetime.now(UTC)
    rows = [
        [
            m["name"],
            m["digest"][:12],
            tables.human_bytes(m["size"]),
            tables.processor(m["size"], m["size_vram"]),
            str(m.get("context_length", 0)),
            tables.until(tables.parse_time(m["expires_at"]), now),
        ]
        for m in models
    ]
    running = {m["name"] for m in models}
    rows += [[name, "", "", "", "", ""] for name in waiting if name not in running]
    rows = [row for row in rows if tables.named(row[0], prefix, fold_case=False)]
    headers = ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    if waiting:
        headers.append("WAITING")
        rows = [[*row, str(waiting.get(row[0], 0))] for row in rows]
    typer.echo(tables.table(rows, headers), nl=False)


@app.command()
def show(
    model: str,
    license_: bool = typer.Option(False, "--license", help="Show the license."),
    modelfile: bool = typer.Option(False, "--modelfile", help="Show the Modelfile."),
    parameters: bool = typer.Option(False, "--parameters", help="Show the parameters."),
    system: bool = typer.Option(False, "--system", help="Show the system message."),
    template: bool = typer.Option(False, "--template", help="Show the template."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show detailed model information."),
) -> None:
    """Show information for a model."""
    chosen = [k for k, on in (("license", license_), ("modelfile", modelfile), ("parameters", parameters),
                              ("system", system), ("template", template)) if on]  # fmt: skip
    if len(chosen) > 1:
        flags = "'--license', '--modelfile', '--parameters', '--system', or '--template'"
        _fail(f"only one of {flags} can be specified")
    try:
        shown = _client().post("/api/show", {"model": model, "verbose": verbose})
    except ClientError as exc:
        _fail(str(exc))
    if chosen:
        # ShowHandler: Println for these three, Print for the system message and the template
        typer.echo(shown.get(chosen[0], ""), nl=chosen[0] in ("license", "modelfile", "parameters"))
        return
    typer.echo(model_summary(shown, verbose), nl=False)


@app.command()
def stop(
    model: str = typer.Argument("", help="The model to unload."),
    all_: bool = typer.Option(False, "--all", help="Unload every running model."),
) -> None:
    """Unload a model now (or every one with --all), as keep_alive 0 does."""
    client = _client()
    try:
        names = [m["name"] for m in client.get("/api/ps")["models"]] if all_ else [model]
    except ClientError as exc:
        _fail(str(exc))
    if not all_ and not model:
        _fail("a model name, or --all")
    for name in names:
        try:
            client.post("/api/generate", {"model": name, "keep_alive": 0})
        except ClientError as exc:
            _fail(f'couldn\'t find model "{name}" to stop' if "not found" in str(exc) else str(exc))


@app.command()
def rm(models: list[str]) -> None:
    """Remove models (unloading them first)."""
    client = _client()
    for model in models:
        with contextlib.suppress(ClientError):
            client.post("/api/generate", {"model": model, "keep_alive": 0})
        try:
            client.delete("/api/delete", {"model": model})
        except ClientError as exc:
            _fail(str(exc))
        typer.echo(f"deleted '{model}'")


@app.command()
def cp(source: str, destination: str) -> None:
    """Copy a model under another name."""
    try:
        _client().post("/api/copy", {"source": source, "destination": destination})
    except ClientError as exc:
        _fail(str(exc))
    typer.echo(f"copied '{source}' to '{destination}'")


@app.command()
def create(
    model: str,
    file: Annotated[Path, typer.Option("--file", "-f", help="Name of the Modelfile.")] = Path("Modelfile"),
    quantize: Annotated[
        str | None, typer.Option("--quantize", "-q", help="Quantize the model to this level.")
    ] = None,
) -> None:
    """Create a model from a Modelfile."""
    client = _client()
    shown = transfer.display("create", sys.stderr)
    try:
        create_model(client, model, file.absolute(), quantize, shown)
    except (ModelfileError, ClientError) as exc:
        shown.stop()
        _fail(str(exc))
    except OSError as exc:
        shown.stop()
        _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    shown.stop()


@app.command()
def pull(
    model: str,
    insecure: Annotated[bool, typer.Option("--insecure", help=INSECURE_HELP)] = False,
) -> None:
    """Pull a model from a registry."""
    try:
        progress = _client().stream("/api/pull", {"model": model, "insecure": insecure})
        transfer.show(progress, "pull", sys.stderr)
    except ClientError as exc:
        _fail(str(exc))


@app.command()
def push(
    model: str,
    insecure: Annotated[bool, typer.Option("--insecure", help=INSECURE_HELP)] = False,
) -> None:
    """Push a model to a registry."""
    try:
        progress = _client().stream("/api/push", {"model": model, "insecure": insecure})
        transfer.show(progress, "push", sys.stderr)
    except ClientError as exc:
        if "access denied" in str(exc).lower() or "unauthorized" in str(exc).lower():
            _fail(NOT_YOURS)
        _fail(str(exc))
    typer.echo(f"\nYou can find your model at:\n\n\t{_pushed_to(model)}")


def _pushed_to(model: str) -> str:
    """Where PushHandler says the model went: its full name, or its page on ollama.com."""
    try:
        name = parse_name(model)
    except InvalidName:
        return model
    if name.host.endswith((".ollama.ai", ".ollama.com")):
        return "https://ollama.com/" + name.display_shortest.removesuffix(":latest")
    return name.full


class _PflagCommand(TyperCommand):
    """Flags with an optional value read as pflag reads them (corral.flags)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Any: typer's own vendored Click
        return super().parse_args(ctx, flags.with_defaults(args))


@app.command(cls=_PflagCommand)
def run(
    model: str,
    prompt: Annotated[list[str] | None, typer.Argument(help="Answer this and exit.")] = None,
    keepalive: Annotated[str | None, typer.Option(help="Duration to keep a model loaded (e.g. 5m).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show timings for response.")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help="Use an insecure registry.")] = False,
    nowordwrap: Annotated[
        bool, typer.Option("--nowordwrap", help="Don't wrap words to the next line automatically.")
    ] = False,
    format_: Annotated[str, typer.Option("--format", help="Response format (e.g. json).")] = "",
    think: Annotated[
        str | None,
        typer.Option(
            "--think",
            metavar="[=true|false|high|medium|low|max]",
            help="Enable thinking mode: true/false or high/medium/low for supported models.",
        ),
    ] = None,
    hidethinking: Annotated[
        bool, typer.Option("--hidethinking", help="Hide thinking output (if provided).")
    ] = False,
    truncate: Annotated[
        str | None,
        typer.Option(
            "--truncate",
            metavar="[=true|false]",
            help="For embedding models: truncate inputs exceeding context length (default: true). "
            "Set --truncate=false to error instead.",
        ),
    ] = None,
    dimensions: Annotated[
        int,
        typer.Option(help="Truncate output embeddings to specified dimension (embedding models only)."),
    ] = 0,
) -> None:
    """Run a model: answer a prompt (or stdin) and exit, or talk with it at `>>> `."""
    try:
        think_value = None if think is None else flags.parse_think(think)
        truncate_value = None if truncate is None else flags.parse_bool_flag("truncate", truncate)
    except ValueError as exc:
        _fail(str(exc))
    opts = RunOptions(model, format=format_, think=think_value, hide_thinking=hidethinking,
                      keep_alive=keepalive, verbose=verbose)  # fmt: skip
    piped = None if sys.stdin.isatty() else sys.stdin.read()
    prompts = prompt_of(prompt or [], piped)
    opts.prompt = " ".join(prompts)
    interactive = piped is None and not prompts and sys.stdout.isatty()
    # Ollama wraps even into a pipe (at 80 columns); corral only on a terminal.
    opts.word_wrap = not nowordwrap and sys.stdout.isatty()
    client, screen = _client(), Screen(sys.stdout, sys.stderr)
    try:
        _run(client, opts, screen, interactive, insecure, think is not None, truncate_value, dimensions)
    except ClientError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        typer.echo()


def _run(client: Client, opts: RunOptions, screen: Screen, interactive: bool, insecure: bool,
         think_given: bool, truncate: bool | None, dimensions: int) -> None:  # fmt: skip
    shown: dict[str, Any] = show_or_pull(client, opts.model, insecure, screen)
    capabilities = shown.get("capabilities") or []
    opts.think = infer_think(capabilities, opts.think, think_given)
    apply_show(opts, shown)
    if "embedding" in capabilities:
        embed(client, opts, truncate, dimensions, screen)
    elif interactive:
        load_model(client, opts, screen)
        print_loaded_messages(opts, screen)
        settings = load_settings()
        history = History(settings.data_dir / "history", enabled=not settings.nohistory)
        Repl(client, opts, screen, input, history).run()
    else:
        generate(client, opts, screen)
