"""`python -m runtime.runner FD`: the runner child (see runtime/runner/child.py)."""

from __future__ import annotations

import sys

from runtime.runner.child import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
