"""The HTTP service under load, beside the encoder alone on the same model, in one run.

    python benchmarks/service.py [--seconds 20] [--clients 1,16,64] [--soak 10000] [--workdir DIR]

Starts the real server (``cliplabel serve``) on a free local port with a full-size ViT-B/32 of random
weights (``CLIPConfig()`` defaults: the real model's compute), then, from this process:

- the encoder alone at batch 32 on preprocessed images, and one single-image forward pass plus the decode of
  one upload (the floor a lone request cannot beat, measured at the start and again just before the lone
  client), measured while the server is idle;
- single-image ``POST /classify/image`` requests from 1, 16 and 64 concurrent async clients (aiohttp): images/s
  and p50/p95 latency; each load is bracketed by encoder measurements, as this shared machine drifts;
- with ``--soak N``: N requests from 64 clients, the server's RSS sampled every N/10 requests.

The text embeddings of the bank are cached under ``--workdir`` after the first run (about 80 s here).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmark import BATCH, encoder_alone, prepare  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, workdir: Path, results: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "CLIPLABEL_CACHE": str(workdir / "text-cache"), "CLIPLABEL_SERVICE_RUNS": "local"}
    cmd = [sys.executable, "-m", "cliplabel_pipeline.cli", "serve", "--results-root", str(results),
           "--model", model, "--port", str(port), "--db", str(workdir / "service.duckdb")]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(workdir / "server.log", "wb"))


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 900) -> dict:
    import httpx  # a few polls: any client will do

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}; see its log")
        try:
            answer = httpx.get(url + "/readyz", timeout=5)
            if answer.status_code == 200:
                return answer.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server was not ready in time")


def single_floor(handle, images: list[bytes], repeats: int = 30) -> dict:
    """Median seconds of one upload's decode and of one single-image forward pass (batch 1)."""
    from cliplabel_pipeline.core.encoding.encode import encode_images
    from cliplabel_pipeline.core.reading.images import load_picture, normalise_batch, resize_and_crop

    decode, forward = [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        crop = resize_and_crop(load_picture(io.BytesIO(images[i % len(images)]))[0], handle.image_size, handle.crop_size)
        t1 = time.perf_counter()
        encode_images(handle, normalise_batch(crop[None], handle.mean, handle.std), 1)
        t2 = time.perf_counter()
        decode.append(t1 - t0)
        forward.append(t2 - t1)
    return {"decode_s": statistics.median(decode[3:]), "forward_s": statistics.median(forward[3:])}


async def load(url: str, images: list[bytes], clients: int, seconds: float | None = None,
               requests: int | None = None, on_progress=None, server_pid: int | None = None) -> dict:
    """``clients`` concurrent loops of single-image requests, for ``seconds`` or until ``requests`` are done.

    The client is aiohttp: at 64 concurrent requests httpx's async client spent 18 ms of CPU a request here
    (aiohttp 0.5 ms), which on a 2-core machine it takes from the server it measures.
    """
    import aiohttp

    latencies: list[float] = []
    errors = 0
    sent = 0
    stop = time.perf_counter() + seconds if seconds else None
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        async def worker(w: int) -> None:
            nonlocal errors, sent
            i = w
            while True:
                if stop is not None and time.perf_counter() >= stop:
                    return
                if requests is not None:
                    if sent >= requests:
                        return
                    sent += 1
                form = aiohttp.FormData()
                form.add_field("files", images[i % len(images)], filename=f"{i}.jpg", content_type="image/jpeg")
                t0 = time.perf_counter()
                async with session.post("/classify/image", data=form) as answer:
                    await answer.read()
                    errors += answer.status != 200
                latencies.append(time.perf_counter() - t0)
                if on_progress:
                    on_progress(len(latencies))
                i += clients

        cpu0 = _cpu_seconds(server_pid), _cpu_seconds(os.getpid())
        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.perf_counter() - start
        cpu1 = _cpu_seconds(server_pid), _cpu_seconds(os.getpid())
    lat = sorted(latencies)
    return {"clients": clients, "requests": len(lat), "errors": errors, "images_per_s": len(lat) / wall,
            "p50_ms": 1000 * lat[len(lat) // 2], "p95_ms": 1000 * lat[int(len(lat) * 0.95)],
            "server_cpu_ms_per_request": 1000 * (cpu1[0] - cpu0[0]) / len(lat),
            "client_cpu_ms_per_request": 1000 * (cpu1[1] - cpu0[1]) / len(lat)}


def _cores() -> int:
    import torch

    return torch.get_num_threads()


def _cpu_seconds(pid: int | None) -> float:
    import psutil

    if pid is None:
        return 0.0
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def soak(url: str, images: list[bytes], n: int, pid: int) -> list[float]:
    """The server's RSS (MB) before and after every tenth of ``n`` requests from 64 clients."""
    import psutil

    proc = psutil.Process(pid)
    samples = [proc.memory_info().rss / 2**20]
    step = max(1, n // 10)

    def progress(done: int) -> None:
        if done % step == 0:
            samples.append(proc.memory_info().rss / 2**20)

    asyncio.run(load(url, images, 64, requests=n, on_progress=progress, server_pid=pid))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="length of each load and encoder measurement")
    parser.add_argument("--clients", default="1,16,64", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--soak", type=int, default=0, help="requests of the RSS soak (0: none)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "cliplabel-bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    paths = prepare(args.workdir, 1, 0)
    pool = sorted((args.workdir / "pool").iterdir())
    images = [p.read_bytes() for p in pool]
    empty_results = args.workdir / "service-results"
    empty_results.mkdir(exist_ok=True)

    from cliplabel_pipeline.core.encoding.model import load_clip

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(paths["model"], args.workdir, empty_results, port)
    try:
        ready = wait_ready(url, server)
        handle = load_clip(paths["model"], "cpu", "auto", cache_dir=args.workdir / "text-cache")
        out = {"precision": ready["precision"], "concepts": ready["concepts"], "batch": BATCH}
        out["single"] = single_floor(handle, images)
        asyncio.run(load(url, images, 4, seconds=3))  # warm-up: the server's kernel plans for its batch shapes
        encoder = [encoder_alone(handle, args.workdir, args.seconds)]
        loads = []
        for clients in (int(c) for c in args.clients.split(",")):
            if clients == 1:  # the floor, measured again just before the lone client: the machine drifts
                floor = single_floor(handle, images)
                out["single"] = {k: (out["single"][k] + floor[k]) / 2 for k in floor}
            before = wait_ready(url, server)["batches"]
            loads.append(asyncio.run(load(url, images, clients, seconds=args.seconds, server_pid=server.pid)))
            after = wait_ready(url, server)["batches"]
            loads[-1]["mean_batch"] = (after["images"] - before["images"]) / max(1, after["count"] - before["count"])
            for key in ("decode_s", "encode_s"):  # the encoding thread's time, per image served
                loads[-1][f"server_{key[:-2]}_ms_per_image"] = (1000 * (after[key] - before[key])
                                                                / max(1, after["images"] - before["images"]))
            encoder.append(encoder_alone(handle, args.workdir, args.seconds))
            mean_encoder = (encoder[-2] + encoder[-1]) / 2
            loads[-1]["x_encoder"] = loads[-1]["images_per_s"] / mean_encoder
            print(json.dumps(loads[-1]), file=sys.stderr)
        out.update(encoder_alone_images_per_s=encoder, loads=loads,
                   encoder_cpu_ms_per_image=1000 * _cores() / (sum(encoder) / len(encoder)))
        floor_ms = 1000 * (out["single"]["decode_s"] + out["single"]["forward_s"])
        lone = next((x for x in loads if x["clients"] == 1), None)
        if lone:
            out["lone_p50_x_floor"] = lone["p50_ms"] / floor_ms
        if args.soak:
            del handle  # the soak measures the server alone
            out["soak_rss_mb"] = soak(url, images, args.soak, server.pid)
    finally:
        server.terminate()
        server.wait(30)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
