"""The two ways a template fails, worded like Go's text/template so that logs read the same as Ollama's."""

from __future__ import annotations


class TemplateError(ValueError):
    """A template that does not parse: `template: :LINE: message`, as Go's parser says it."""


class ExecError(TemplateError):
    """A template that parsed but failed while running: `template: :LINE:COL: executing "" at <node>: ...`.

    A subclass of TemplateError so that callers catching one error type catch both, as Ollama does
    (it returns either as an HTTP 500 with the message).
    """
