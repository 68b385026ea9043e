"""Where long work stands, said by the core and shown by a face.

The core calls ``progress(stage, done, total)``: once with ``done=0`` when a stage starts, as work gets done,
and with ``done == total`` when it ends (``total`` None: a stage with no count, such as loading the model).
The CLI draws bars on a terminal and writes log lines elsewhere; Dagster and the service pass nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

Progress = Callable[[str, int, "int | None"], None]


def silent(stage: str, done: int, total: int | None) -> None:
    """A progress that shows nothing."""


@contextmanager
def step(progress: Progress | None, stage: str) -> Iterator[None]:
    """A stage without a count: said when it starts and when it ends."""
    report = progress or silent
    report(stage, 0, None)
    yield
    report(stage, 1, 1)


def counter(progress: Progress | None, stage: str, total: int) -> Callable[[int], None]:
    """``advance(done)`` for a stage of ``total`` units, started now."""
    report = progress or silent
    report(stage, 0, total)
    return lambda done: report(stage, done, total)
