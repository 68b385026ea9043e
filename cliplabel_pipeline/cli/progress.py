"""How the CLI shows the core's progress: a bar per stage on a terminal (tqdm); elsewhere log lines (shown
with ``-v``), one every ``LINE_EVERY_S`` while a counted stage runs and one when each stage ends, so a script's
stderr holds only what it asked for and a failure stays one line.

Rates are measured from a stage's first unit done, not from when the command started, so model loading
and the first batch's warm-up never read as a slow job.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

LINE_EVERY_S = 10.0  # off a terminal: a line this often while a counted stage runs


class ProgressView:
    """A ``core.progress.Progress``: ``view(stage, done, total)``."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None,
                 say: Callable[[str], None] | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.say = say or logging.getLogger("cliplabel").info
        self.stage: str | None = None
        self.finished: str | None = None
        self.bar: tqdm | None = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage == self.finished and stage != self.stage:
            return  # said already: a stage that ends twice ends once
        if stage != self.stage:
            self.close()
            self.stage, self.started, self.first = stage, time.perf_counter(), None
            if self.tty:
                size = shutil.get_terminal_size((100, 20))  # a terminal that reports 0 x 0 gets a sane bar
                self.bar = tqdm(total=total, desc=stage, file=self.stream, unit="it",
                                leave=True, ncols=min(size.columns or 100, 120), nrows=size.lines or 20,
                                bar_format="{desc}: {elapsed}" if total is None else None)
            self.said = time.perf_counter()  # off a terminal the first line comes after LINE_EVERY_S, or at the end
        if done and self.first is None:
            self.first = (time.perf_counter(), done)
        if self.bar is not None and total is not None:
            self.bar.update(done - self.bar.n)
        if total is not None and done >= total:
            self._finish(done, total)
        elif not self.tty and total and time.perf_counter() - self.said >= LINE_EVERY_S:
            rate = self._rate(done)
            eta = f", about {(total - done) / rate:.0f}s to go" if rate else ""
            self._line(f"{stage}: {done}/{total}" + (f" at {rate:.1f}/s{eta}" if rate else ""))
            self.said = time.perf_counter()

    def _finish(self, done: int, total: int) -> None:
        seconds = time.perf_counter() - self.started
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif not self.tty:
            rate = self._rate(done)
            self._line(f"{self.stage}: done in {seconds:.1f}s" + (f", {done} at {rate:.1f}/s" if rate else ""))
        self.stage, self.finished = None, self.stage

    def _rate(self, done: int) -> float | None:
        if self.first is None or done <= self.first[1]:
            return None
        return (done - self.first[1]) / max(time.perf_counter() - self.first[0], 1e-9)

    def _line(self, text: str) -> None:
        self.say(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "ProgressView":
        return self

    def __exit__(self, *exc) -> None:
        """The open bar ends its line first, so an error after it is a line of its own and no bar is drawn
        again below it."""
        self.close()
