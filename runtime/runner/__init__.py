"""Runners: one child process per loaded model, owning a llama-cpp-python ``Llama``.

``Runner.start(LoadSpec)`` starts ``python -m runtime.runner`` and loads the model;
``complete``, ``tokenize``, ``detokenize`` and ``embed`` talk to it over a socket pair
(protocol in ``runtime/runner/protocol.py``). A crash or SIGKILL of the child fails the
requests in flight with ``RunnerCrashed``; the server is unaffected.
"""

from runtime.runner.client import CRASH_MESSAGE, Runner, RunnerCrashed, RunnerError
from runtime.runner.protocol import CompleteSpec, LoadSpec, Sampling

__all__ = [
    "CRASH_MESSAGE",
    "CompleteSpec",
    "LoadSpec",
    "Runner",
    "RunnerCrashed",
    "RunnerError",
    "Sampling",
]
