from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _fixed_date(monkeypatch):
    """gen/main.go renders currentDate as 2025-06-15; so does Python here."""
    from runtime.template import funcs

    monkeypatch.setattr(funcs, "today", lambda: datetime.date(2025, 6, 15))
