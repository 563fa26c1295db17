"""The registry's one error type: Ollama's message and a wire code (see protocol ErrorCode)."""

from __future__ import annotations

from services.protocol.messages import ErrorCode


class RegistryError(Exception):
    def __init__(self, message: str, code: ErrorCode = "invalid") -> None:
        super().__init__(message)
        self.code = code
