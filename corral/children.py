"""Child processes of `corral serve`: in their own session, and dying with the launcher.

Children run in their own sessions, so Ctrl-C reaches only the launcher, which
stops them in order; on Linux each child also gets SIGTERM if the launcher is
killed outright, so nothing is orphaned.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import IO

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def spawn(
    args: Sequence[str],
    *,
    detached: bool,
    env: Mapping[str, str] | None = None,
    stdout: IO[bytes] | int | None = None,
    stderr: IO[bytes] | int | None = None,
) -> subprocess.Popen[bytes]:
    """Start `args`; `detached` children get their own session and die with this process."""
    die_with_parent = detached and sys.platform.startswith("linux")
    return subprocess.Popen(
        list(args),
        env=env,
        stdout=stdout,
        stderr=stderr,
        start_new_session=detached,
        preexec_fn=_die_with_parent if die_with_parent else None,
    )
