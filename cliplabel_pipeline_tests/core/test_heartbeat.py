"""Heartbeat lines: one exact format, periodic and at the end."""

from __future__ import annotations

import re
import time

from cliplabel_pipeline.core.heartbeat import Heartbeat, heartbeat_line, op_id

HB = re.compile(r"^HB op=[0-9a-f]{8} job=(none|[^\s]+) dur=\d+\.\d{2}s rss=\d+MB gpu=\d+/\d+MB$")


def test_heartbeat_line_has_the_documented_format():
    line = heartbeat_line(op_id("run", "step"), None, 40.456)
    assert HB.match(line), line
    assert " job=none " in line and " dur=40.46s " in line and line.endswith(" gpu=0/0MB")


def test_heartbeat_beats_while_running_and_once_at_the_end():
    lines: list[str] = []
    with Heartbeat("fae757d0", "job-7", lines.append, interval=0.05):
        time.sleep(0.3)
    assert len(lines) >= 3 and all(HB.match(line) for line in lines)
    assert all(line.startswith("HB op=fae757d0 job=job-7 ") for line in lines)
    durations = [float(re.search(r"dur=([\d.]+)s", line).group(1)) for line in lines]
    assert durations == sorted(durations) and durations[-1] >= 0.3
