"""Quantization through llama.cpp's quantizer, in a child process.

llama.cpp can abort the whole process on a file it dislikes, so the quantizer never
runs inside the server: `quantize()` starts `python -m runtime.quantize` and turns
its exit status into an error message.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runtime.runner.client import runner_env

# llama_ftype values (llama.h) for the names ollama accepts in `quantize`.
FTYPES = {
    "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9, "q8_0": 7,
    "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13,
    "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18,
}
TIMEOUT_S = 3600


class QuantizeError(RuntimeError):
    pass


def runtime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def quantize(source: Path, qtype: str, out: Path) -> None:
    ftype = FTYPES.get(qtype.lower())
    if ftype is None:
        raise QuantizeError(f"unsupported quantization type {qtype}; use one of "
                            + ", ".join(sorted(k.replace("_k", "_K") for k in FTYPES)))
    if not runtime_available():
        raise QuantizeError("quantization needs llama-cpp-python: pip install 'corral[runtime]'")
    env = {**runner_env(os.environ), "GGML_NO_BACKTRACE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.quantize", str(source), str(out), str(ftype)],
        capture_output=True, text=True, env=env, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        raise QuantizeError(f"quantizing to {qtype} failed: " + (" / ".join(tail) or f"exit {proc.returncode}"))


def _main(argv: list[str]) -> int:
    import llama_cpp

    source, out, ftype = argv[0], argv[1], int(argv[2])
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = max(1, min(4, os.cpu_count() or 1))
    status = llama_cpp.llama_model_quantize(source.encode(), out.encode(), params)
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
