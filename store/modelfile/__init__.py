"""Modelfiles: parse them as ollama does, write them back, and derive ``/api/create`` fields.

Pure functions only: nothing here reads files or talks to the network.
"""

from store.modelfile.format import (
    format_command,
    format_modelfile,
    format_value,
    quote,
    show_modelfile,
)
from store.modelfile.parser import (
    INSTRUCTIONS,
    Command,
    Modelfile,
    ModelfileError,
    create_request_fields,
    looks_like_path,
    parse_modelfile,
    resolve_path,
)

__all__ = [
    "INSTRUCTIONS",
    "Command",
    "Modelfile",
    "ModelfileError",
    "create_request_fields",
    "format_command",
    "format_modelfile",
    "format_value",
    "looks_like_path",
    "parse_modelfile",
    "quote",
    "resolve_path",
    "show_modelfile",
]
