"""Live comparison with Go's text/template (skipped only when ``go`` is absent).

Runs gen/main.go on every Go-runnable case, compares Python with it, and checks
that the committed vectors are what Go produces today.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from regen_template_vectors import go_cases, run_go
from template_helpers import run_case

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="go is not installed")

EXPECTED = Path(__file__).parent / "vectors" / "expected.json"


@pytest.fixture(scope="module")
def go_results():
    cases = go_cases()
    return cases, run_go(cases)


def test_python_matches_live_go(go_results):
    cases, results = go_results
    assert len(cases) == len(results)
    mismatches = []
    for case, want in zip(cases, results, strict=True):
        got = run_case(case)
        if (got["output"], got["error"]) != (want["output"], want["error"]):
            mismatches.append((case["name"], want, got))
        elif want.get("vars") is not None and got["vars"] != want["vars"]:
            mismatches.append((case["name"], want, got))
    assert not mismatches, json.dumps(mismatches[:5], indent=1, ensure_ascii=False)


def test_committed_vectors_are_current(go_results):
    cases, results = go_results
    committed = {e["case"]["name"]: e for e in json.loads(EXPECTED.read_text(encoding="utf-8"))}
    stale = []
    for case, r in zip(cases, results, strict=True):
        e = committed.get(case["name"])
        if e is None or e["case"] != case or (e["output"], e["error"]) != (r["output"], r["error"]):
            stale.append(case["name"])
    assert not stale, f"run regen_template_vectors.py; stale vectors: {stale[:10]}"
