"""Regenerate the Go vectors: ``python tests/unit/template/regen_template_vectors.py``.

Writes ``vectors/cases.json`` (the cases Go runs) and ``vectors/expected.json``
(every case with its expected result: Go's, or the hand-written one for cases
that need a newer Go than Debian's). Needs ``go`` on PATH; no network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VECTORS = HERE / "vectors"
GEN = HERE / "gen" / "main.go"
sys.path.insert(0, str(HERE))

from template_cases import CASES  # noqa: E402

HAND_KEYS = ("go", "expect", "expect_error")


def go_input(case: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in case.items() if k not in HAND_KEYS}


def go_cases() -> list[dict[str, Any]]:
    return [go_input(c) for c in CASES if c.get("go", True)]


def run_go(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run gen/main.go on ``cases``; returns its results in order."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cases.json"
        path.write_text(json.dumps(cases, ensure_ascii=False), encoding="utf-8")
        env = dict(os.environ)
        env.setdefault("GOCACHE", str(Path(tempfile.gettempdir()) / "corral-go-cache"))
        env.setdefault("HOME", tmp)
        env["GOFLAGS"] = "-mod=mod"
        env.setdefault("GOTOOLCHAIN", "local")
        proc = subprocess.run(
            ["go", "run", str(GEN), str(path)],
            capture_output=True, text=True, env=env, timeout=300, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"go run failed:\n{proc.stderr}")
        return json.loads(proc.stdout)


def expected_entries(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_name = {r["name"]: r for r in results}
    out = []
    for c in CASES:
        entry: dict[str, Any] = {"case": go_input(c)}
        if c.get("go", True):
            r = by_name[c["name"]]
            entry.update(source="go", output=r["output"], error=r["error"])
            if r.get("vars") is not None:
                entry["vars"] = r["vars"]
        else:
            entry.update(source="hand", output=c.get("expect", ""), error=c.get("expect_error"))
        out.append(entry)
    return out


def main() -> None:
    names = [c["name"] for c in CASES]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise SystemExit(f"duplicate case names: {sorted(dupes)}")
    cases = go_cases()
    results = run_go(cases)
    VECTORS.mkdir(exist_ok=True)
    (VECTORS / "cases.json").write_text(json.dumps(cases, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (VECTORS / "expected.json").write_text(
        json.dumps(expected_entries(results), ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    print(f"wrote {len(cases)} Go cases, {len(CASES)} expectations to {VECTORS}")


if __name__ == "__main__":
    main()
