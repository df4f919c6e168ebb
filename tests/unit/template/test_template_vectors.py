"""Python rendering against the committed Go vectors (no Go needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from template_helpers import run_case

ENTRIES = json.loads((Path(__file__).parent / "vectors" / "expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["case"]["name"] for e in ENTRIES])
def test_vector(entry):
    got = run_case(entry["case"])
    assert got["error"] == entry["error"]
    assert got["output"] == entry["output"]
    if entry.get("vars") is not None:
        assert got["vars"] == entry["vars"]
