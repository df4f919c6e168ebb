"""The one exception type of the template package."""

from __future__ import annotations


class TemplateError(Exception):
    """A template failed to parse or to execute.

    The message follows Go's text/template wording, e.g.
    ``template: :1: unexpected EOF`` for a parse error or
    ``template: :1:3: executing "" at <.X.Y>: nil pointer evaluating interface {}.Y``
    for an execution error.
    """


class LimitExceeded(TemplateError):
    """Execution went past an output, iteration or depth limit."""
