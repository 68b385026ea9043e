"""The real service on a free local port (uvicorn in a thread of the test process), called over HTTP."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.service.app import create_app
from cliplabel_pipeline.toyworld.jobs import write_toy_job


class RunningServer:
    """A uvicorn server over ``create_app(settings)``; ``url`` is where it listens."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "RunningServer":
        self.thread.start()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the service at {self.url} was not ready within {timeout} s")

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def service_settings(root: Path, toy_model: str, text_cache: Path, **changes) -> Settings:
    base = Settings(model=toy_model, device="cpu", precision="fp32", cache_dir=text_cache, results_root=root,
                    db=root.parent / "service.duckdb", db_wait_s=2, service_runs="local",
                    max_upload_bytes=300_000, max_upload_pixels=1_000_000, max_upload_files=16)
    return Settings(**(base.model_dump() | changes))


@pytest.fixture(scope="module")
def service_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("service") / "results"
    root.mkdir()
    return root


@pytest.fixture(scope="module")
def server(service_root, toy_model, text_cache):
    """One server for a test module: the toy model in fp32, small upload limits, local job runs."""
    with RunningServer(service_settings(service_root, toy_model, text_cache)) as running:
        yield running


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture
def new_job(service_root):
    """A fresh toy job under the server's results root; returns its id."""
    count = iter(range(10_000))

    def make(n_objects: int = 4, seed: int = 7, labels: list[str] | None = None) -> str:
        job_id = f"job-{time.time_ns()}-{next(count)}"
        write_toy_job(service_root, job_id, seed=seed, n_objects=n_objects, labels=labels)
        return job_id

    return make


def wait_done(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    """Poll the job's status URL until it is done or failed."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = client.get(f"/classify/job/{job_id}").json()
        if body["state"] in ("done", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {body['state']} after {timeout} s")
