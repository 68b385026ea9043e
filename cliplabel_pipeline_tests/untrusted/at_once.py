"""``python -m cliplabel_pipeline_tests.untrusted.at_once GATE cliplabel-args...``: the ``cliplabel`` command in
a process of its own that imports everything first, says so (``GATE.<pid>.ready``), then waits for ``GATE`` to
exist before it starts. Two of them released together start their commands within a millisecond or two of each
other, where two plain starts differ by their import times (seconds on a busy machine)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> int:
    gate, args = Path(sys.argv[1]), sys.argv[2:]
    from cliplabel_pipeline.cli import main as cliplabel
    import cliplabel_pipeline.core.pipeline  # noqa: F401 - the heavy imports (torch) before the gate, not after
    import cliplabel_pipeline.core.upkeep  # noqa: F401

    Path(f"{gate}.{os.getpid()}.ready").touch()
    deadline = time.monotonic() + 300
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    return cliplabel(args)


if __name__ == "__main__":
    sys.exit(main())
