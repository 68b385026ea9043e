"""``cliplabel model pull`` against a hub that never answers, or is not there: it ends, in one line naming
the fix, instead of waiting for good."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest
from huggingface_hub import constants

from cliplabel_pipeline.core.encoding.model import pull_model
from cliplabel_pipeline.core.errors import CliplabelError


@pytest.fixture
def silent_server():
    """A server on 127.0.0.1 that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)  # the kernel completes the handshakes; nobody ever reads or answers
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture
def free_port_url():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now: connections are refused
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def online(monkeypatch, tmp_path):
    """The hub's settings for this process as if online, with a 1 s read timeout and a cache of our own."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def at(endpoint: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    return at


def test_pull_from_a_server_that_never_answers_ends_with_the_fix(online, silent_server):
    online(silent_server)
    outcome: list[BaseException] = []

    def pull() -> None:
        try:
            pull_model("someone/tiny-clip")
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=pull, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "model pull is still waiting on a server that never answers"
    (error,) = outcome
    message = str(error)
    assert isinstance(error, CliplabelError) and "\n" not in message
    assert f"{silent_server} did not answer within 1 s" in message and "HF_HUB_DOWNLOAD_TIMEOUT" in message


def test_pull_from_a_port_nobody_listens_on_ends_with_the_fix(online, free_port_url):
    online(free_port_url)
    with pytest.raises(CliplabelError, match=f"cannot connect to {free_port_url}; check the network, proxy or HF_ENDPOINT"):
        pull_model("someone/tiny-clip")


@pytest.mark.slow
def test_the_cli_says_it_in_one_line_without_a_traceback(silent_server, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=silent_server, HF_HOME=str(tmp_path / "hf"), HF_HUB_DOWNLOAD_TIMEOUT="1",
               PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run([sys.executable, "-m", "cliplabel_pipeline.cli", "model", "pull", "--model",
                          "someone/tiny-clip"], capture_output=True, text=True, env=env, timeout=180,
                         check=False)
    lines = run.stderr.strip().splitlines()
    assert run.returncode != 0 and len(lines) == 1 and "did not answer within 1 s" in lines[0]
