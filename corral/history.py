"""Line editing and history at `>>> `, through Python's readline when the platform has it.

As Ollama's readline/history.go: the last 100 lines, saved after each one to a history file
(Ollama's ~/.ollama/history; corral's under its data directory, ~/.corral/history), and
`/set nohistory` stops recording (OLLAMA_NOHISTORY: from the first line).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import ModuleType

LIMIT = 100


def _readline() -> ModuleType | None:
    try:
        import readline  # only for a conversation: importing it changes input()
    except ImportError:
        return None
    return readline


class History:
    def __init__(self, path: Path | None, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        self._readline = _readline()
        self.enable(enabled)
        if self._readline is None or path is None:
            return
        self._readline.set_history_length(LIMIT)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._readline.read_history_file(path)

    def enable(self, on: bool) -> None:
        self.enabled = on
        if self._readline is not None:
            self._readline.set_auto_history(on)

    def save(self) -> None:
        """After each line read: the history file follows (Ollama's Autosave)."""
        if self._readline is None or self.path is None or not self.enabled:
            return
        with contextlib.suppress(OSError):
            self._readline.write_history_file(self.path)
