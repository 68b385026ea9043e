"""``cliplabel serve`` starts uvicorn on 127.0.0.1 and answers; it refuses a missing results root in one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_on_localhost_and_stops_on_sigterm(results_root, toy_model, tmp_path):
    port = _free_port()
    env = {**os.environ, "CLIPLABEL_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "cliplabel_pipeline.cli", "serve", "--results-root",
                             str(results_root), "--model", toy_model, "--precision", "fp32", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, ready = time.time() + 90, None
        while time.time() < deadline and ready is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                ready = answer.json() if answer.status_code == 200 else None
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready is not None and ready["model"] == toy_model
        docs = httpx.get(f"http://127.0.0.1:{port}/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        listening = [c for c in __import__("psutil").Process(proc.pid).net_connections() if c.status == "LISTEN"]
        assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0].decode()
    # uvicorn shuts down cleanly, then re-raises the signal it caught, as a process killed by it would end
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert f"Uvicorn running on http://127.0.0.1:{port}" in out and "Application shutdown complete" in out
    assert "Loading weights" not in out and "it/s]" not in out, out  # no third-party progress bar in its log


def test_serve_without_a_results_root_says_so_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cliplabel_pipeline.cli", "serve", "--results-root",
                           str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f"cliplabel: error: results root {tmp_path / 'nowhere'} does not exist"


def test_serve_refuses_a_port_out_of_range_before_it_starts(results_root):
    done = subprocess.run([sys.executable, "-m", "cliplabel_pipeline.cli", "serve", "--results-root",
                           str(results_root), "--port", "99999"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Uvicorn" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == \
        "cliplabel serve: error: argument --port: must be between 1 and 65535, got 99999"


@pytest.mark.parametrize("port, said", [
    ("0", "must be between 1 and 65535, got 0"), ("-1", "must be between 1 and 65535, got -1"),
    ("65536", "must be between 1 and 65535, got 65536"), ("80.5", "must be a whole number, got 80.5"),
    ("http", "must be a number, got 'http'"),
])
def test_every_port_outside_1_to_65535_is_one_usage_line(results_root, port, said, capsys):
    from cliplabel_pipeline.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--results-root", str(results_root), f"--port={port}"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"cliplabel serve: error: argument --port: {said}"
