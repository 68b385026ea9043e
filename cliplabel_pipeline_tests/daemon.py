"""The real Dagster daemon for end-to-end tests: started in its own session, stopped by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def running_daemon(env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """``dagster-daemon run`` over the repository's workspace with ``env``; stopped (its whole group) after."""
    daemon = subprocess.Popen([Path(sys.executable).parent / "dagster-daemon", "run", "-w", str(REPO / "workspace.yaml")],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        yield daemon
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
