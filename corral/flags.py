"""`corral run`'s flags read as Ollama's cobra/pflag reads them.

pflag's NoOptDefVal: `--think` alone means `--think=true`, and a value must be joined with
`=` (`--think high` is the flag, then a prompt word "high"). Click would take the next word as
the value, so those flags are rewritten before Click parses them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from corral.modelfile import parse_bool
from services.gotemplate.gostr import quote

NO_OPT_DEFAULTS = {"--think": "true", "--truncate": "true"}  # cmd.go: NoOptDefVal, Go's bool flag
THINK_LEVELS = ("high", "medium", "low", "max")

Think = bool | str  # true / false, or a level


def with_defaults(args: Sequence[str], defaults: Mapping[str, str] = NO_OPT_DEFAULTS) -> list[str]:
    """`args` with each bare flag of `defaults` given its default value (up to a `--`)."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            return out + list(args[i:])
        out.append(f"{arg}={defaults[arg]}" if arg in defaults else arg)
    return out


def parse_think(text: str) -> Think:
    """RunHandler's --think: true or false, or a thinking level."""
    if text in ("", "true"):
        return True
    if text == "false":
        return False
    if text in THINK_LEVELS:
        return text
    raise ValueError(
        f"invalid value for --think: {quote(text)} (must be true, false, high, medium, low, or max)"
    )


def parse_bool_flag(name: str, text: str) -> bool:
    """A Go bool flag's value (`--truncate=false`), with pflag's error."""
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise ValueError(
            f'invalid argument {quote(text)} for "--{name}" flag: '
            f"strconv.ParseBool: parsing {quote(text)}: invalid syntax"
        ) from exc
