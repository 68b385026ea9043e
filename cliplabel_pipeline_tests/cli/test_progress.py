"""What a person sees while work runs: one bar (or a few lines) per stage, rates from the first item done."""
# on a terminal the same calls drive tqdm bars; these tests read the lines written when stderr is not one

from __future__ import annotations

import re

import pytest

from cliplabel_pipeline.cli import main
from cliplabel_pipeline.cli import progress as view_module
from cliplabel_pipeline.cli.progress import ProgressView


def test_off_a_terminal_a_stage_logs_while_it_runs_and_when_it_ends_with_its_rate(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(view_module.time, "perf_counter", lambda: now[0])
    lines = []
    view = ProgressView(tty=False, say=lines.append)
    view("encoding", 0, 96)  # started at t=0 (the model loaded before this)
    now[0] = 100.0
    view("encoding", 32, 96)  # first batch done at t=100: a slow warm-up must not read as a slow job
    now[0] = 101.0
    view("encoding", 64, 96)
    now[0] = 111.0
    view("encoding", 96, 96)
    view("encoding", 96, 96)  # said twice by the core: ended once
    assert lines == [
        "encoding: 32/96",  # ten seconds without a line: one, no rate yet
        "encoding: done in 111.0s, 96 at 5.8/s",  # (96 - 32) items in the 11 s after the first batch
    ]


def test_a_job_shows_every_stage_and_ends_at_its_total_when_items_are_skipped(results_root, toy_model, capfd):
    from cliplabel_pipeline.toyworld.jobs import write_toy_job

    job = write_toy_job(results_root, "job", seed=3, n_objects=2)
    (job / "objects" / "broken.png").write_bytes(b"not a picture")
    assert main(["-v", "job", "job", "--results-root", str(results_root), "--model", toy_model, "--batch-size", "2"]) == 0
    err = capfd.readouterr().err
    for stage in ("loading", "job: encoding", "job: scoring", "job: grouping", "job: exporting", "job: report"):
        assert re.search(rf"INFO cliplabel: [^\n]*{stage}[^\n]*: done in", err), (stage, err)
    assert re.search(r"job: encoding: done in [\d.]+s, 6 at [\d.]+/s", err), err
    assert "5/6" not in err  # the broken file counted, not left out


def test_with_v_one_line_per_batch_and_a_heartbeat(results_root, toy_model, capfd):
    from cliplabel_pipeline.toyworld.jobs import write_toy_job

    write_toy_job(results_root, "job", seed=3, n_objects=4)
    assert main(["-v", "job", "job", "--results-root", str(results_root), "--model", toy_model, "--batch-size", "4"]) == 0
    err = capfd.readouterr().err
    batches = re.findall(r"batch=(\d+) items=(\d+) dur=[\d.]+s items/s=[\d.]+ rss=\d+MB gpu=\d+/\d+MB", err)
    assert [int(b) for b, _ in batches] == [1, 2, 3] and sum(int(k) for _, k in batches) == 9
    assert re.search(r"HB op=[0-9a-f]{8} job=job dur=[\d.]+s rss=\d+MB gpu=\d+/\d+MB", err)


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_classify_says_each_skip_once(tmp_path, toy_model, capfd, verbose):
    (tmp_path / "bad.png").write_bytes(b"junk")
    assert main([*verbose, "classify", str(tmp_path / "bad.png"), "--model", toy_model]) == 1  # nothing labelled
    err = capfd.readouterr().err
    assert err.count("bad.png") == 1, err
    assert err.strip().splitlines()[-1] == "cliplabel: error: none of the 1 files could be labelled (each skip is listed above)"


def _on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal, as a person runs it; what the terminal got."""
    import os
    import pty
    import subprocess
    import sys

    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "cliplabel_pipeline.cli", *argv], stdin=subprocess.DEVNULL,
                            stdout=child_fd, stderr=child_fd, env=env, close_fds=True)
    os.close(child_fd)
    got = b""
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        got += chunk
    os.close(main_fd)
    return proc.wait(timeout=120), got.decode(errors="replace")


def test_on_a_terminal_an_error_is_a_line_of_its_own_and_no_bar_is_drawn_after_it(toy_job, tmp_path):
    root, job_id = toy_job
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_CACHE": str(tmp_path / "empty"), "HOME": str(tmp_path),
           "COLUMNS": "100", "LINES": "20", "TERM": "xterm"}
    rc, screen = _on_a_terminal(["job", job_id, "--results-root", str(root), "--model", str(tmp_path / "no-model")],
                                env)
    assert rc == 2, screen
    lines = screen.replace("\r\n", "\n").split("\n")
    error = [i for i, line in enumerate(lines) if "cliplabel: error:" in line]
    assert len(error) == 1, screen
    # the bar's line ended before the error; what a terminal shows of that line is its last redraw (after a \r)
    assert lines[error[0]].split("\r")[-1].startswith("cliplabel: error:"), repr(lines[error[0]])
    assert "\r" not in lines[error[0]], repr(lines[error[0]])  # not written over a bar's line
    assert not "".join(lines[error[0] + 1:]).strip(), repr(screen)  # nothing drawn below it
