"""corral's faces: the Ollama HTTP API, the CLI."""

__version__ = "0.1.0"
