"""The web UI at /ui/ (see api/ui/routes.py)."""

from api.ui.routes import install

__all__ = ["install"]
