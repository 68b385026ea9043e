"""Background decoding on the CPU: a job's items decoded by low-priority processes give exactly what decoding in
turn gives (crops, areas, skips and their reasons, in order), survive a decoding process that dies, and stand
aside where processes cannot be started (Windows)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from cliplabel_pipeline.core.encoding import decode_pool
from cliplabel_pipeline.core.encoding.decode_pool import PathLoader, background_pool
from cliplabel_pipeline.core.encoding.embedding import embed_images, job_loaders, path_loaders
from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.reading.items import list_job_items
from cliplabel_pipeline.toyworld.jobs import write_toy_job

MAIN_PID = os.getpid()


def _in_turn(jobs):
    """The same loaders, wrapped so no process can run them: decoded by threads in turn with the model."""
    return [(item, lambda loader=loader: loader()) for item, loader in jobs]


def _awkward_job(root: Path) -> str:
    """A toy job with every kind of item that is skipped, between items that are not."""
    job = write_toy_job(root, "awkward", seed=7, n_objects=6)
    (job / "masks" / "0_empty.png").write_bytes(_png(np.zeros((240, 320), np.uint8)))
    (job / "masks" / "1_not_an_image.png").write_bytes(b"not a png at all")
    (job / "masks" / "2_other_aspect.png").write_bytes(_png(np.full((50, 300), 255, np.uint8)))
    (job / "objects" / "0_transparent.png").write_bytes(_png(np.zeros((20, 20, 4), np.uint8)))
    (job / "objects" / "1_empty_file.png").write_bytes(b"")
    return "awkward"


def _png(pixels: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _same(a, b) -> None:
    assert [(i.path, i.kind, i.area) for i in a.items] == [(i.path, i.kind, i.area) for i in b.items]
    assert [(s.path, s.kind, s.reason) for s in a.skipped] == [(s.path, s.kind, s.reason) for s in b.skipped]
    np.testing.assert_array_equal(a.embeddings, b.embeddings)


def test_a_job_decoded_in_the_background_is_the_job_decoded_in_turn(labeller, results_root, caplog):
    job = JobFolder.open(results_root, _awkward_job(results_root))
    jobs = list(job_loaders(list_job_items(job)))
    with caplog.at_level(logging.INFO, "cliplabel_pipeline.core.encoding"):
        background = embed_images(labeller.encoder, jobs, batch_size=4)
    skipped_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    in_turn = embed_images(labeller.encoder, _in_turn(jobs), batch_size=4)
    _same(background, in_turn)
    assert len(background.skipped) == 5 and len(background.items) > 5
    # each skip is said once, by this process (a decoding process's own log goes nowhere)
    assert sorted(skipped_lines) == sorted(f"skipped {s.path}: {s.reason}" for s in background.skipped)


def test_the_decoding_processes_run_below_the_model():
    ours = psutil.Process().nice()  # 0, or what the suite was started with (nice -n 19 make test)
    pool = background_pool(2)
    assert pool is not None
    pids = set(pool.submit(os.getpid).result() for _ in range(4))
    assert MAIN_PID not in pids
    assert all(psutil.Process(pid).nice() == 19 for pid in pids)
    assert psutil.Process().nice() == ours  # the model's process is left as it was


@dataclass(frozen=True)
class _DiesInAChild(PathLoader):
    """Decodes as ``PathLoader`` in the process that made it; kills any other process that runs it."""

    made_by: int = 0

    def __call__(self):
        if os.getpid() != self.made_by:
            os._exit(3)
        return super().__call__()


def test_a_decoding_process_that_dies_loses_nothing(labeller, tmp_path, caplog):
    paths = []
    for i in range(40):
        paths.append(tmp_path / f"{i:02d}.png")
        paths[-1].write_bytes(_png(np.random.default_rng(i).integers(0, 256, (40, 60, 3), dtype=np.uint8)))
    jobs = list(path_loaders(paths))
    expected = embed_images(labeller.encoder, _in_turn(jobs), batch_size=8)
    jobs[21] = (jobs[21][0], _DiesInAChild(str(paths[21]), made_by=os.getpid()))
    with caplog.at_level(logging.WARNING):
        survived = embed_images(labeller.encoder, jobs, batch_size=8)
    _same(survived, expected)
    assert any("background decoding failed" in r.getMessage() for r in caplog.records)
    again = embed_images(labeller.encoder, list(path_loaders(paths)), batch_size=8)  # a new pool, working
    _same(again, expected)


def test_a_small_job_does_not_start_the_decoding_processes(toy_model, toy_job, tmp_path):
    """Starting them costs more than a few batches' decoding; a process that has them uses them for any job."""
    import subprocess
    import sys

    root, job_id = toy_job
    code = ("from pathlib import Path\n"
            "from cliplabel_pipeline.core.encoding import decode_pool\n"
            "from cliplabel_pipeline.core.job_folder import JobFolder\n"
            "from cliplabel_pipeline.core.labeller import Labeller\n"
            "from cliplabel_pipeline.core.pipeline import label_job\n"
            "from cliplabel_pipeline.core.settings import Settings\n"
            f"lab = Labeller.load(Settings(model={toy_model!r}, device='cpu', cache_dir=Path({str(tmp_path)!r})))\n"
            f"label_job(lab, JobFolder.open(Path({str(root)!r}), {job_id!r}))\n"
            "print('started:', decode_pool._background is not None)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert "started: False" in done.stdout, done.stdout + done.stderr


def test_where_processes_cannot_start_decoding_takes_turns(labeller, toy_job, windows_like):
    root, job_id = toy_job
    assert background_pool(2) is None
    jobs = list(job_loaders(list_job_items(JobFolder.open(root, job_id))))
    pools_before = decode_pool._background
    embedded = embed_images(labeller.encoder, jobs, batch_size=4)
    assert len(embedded.items) == len(jobs) and decode_pool._background is pools_before


def test_a_decoding_process_lets_the_source_go_when_idle(toy_job, monkeypatch):
    """What a decoding process does with a job's mask, done here: the source it decoded for the job is kept
    while tasks come, and let go once none has come for ``SOURCE_IDLE_S``."""
    import pickle
    import time

    root, job_id = toy_job
    monkeypatch.setattr(decode_pool, "SOURCE_IDLE_S", 0.2)
    loaders = [loader for item, loader in job_loaders(list_job_items(JobFolder.open(root, job_id)))
               if item.kind == "mask"]
    in_worker = pickle.loads(pickle.dumps(loaders))  # as a task reaches a decoding process
    crops = decode_pool.crop_items(in_worker, 224, 224)
    assert all(isinstance(c, tuple) for c in crops) and len(decode_pool._WORKER_SOURCE) == 1
    deadline = time.monotonic() + 5
    while decode_pool._WORKER_SOURCE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not decode_pool._WORKER_SOURCE


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_model_s_threads_sleep_between_operations_unless_told_otherwise(given, expected):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | ({"OMP_WAIT_POLICY": given} if given else {})
    code = "import cliplabel_pipeline, os, sys; assert 'torch' not in sys.modules; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == expected


def test_a_script_with_no_main_guard_labels_once(toy_job, toy_model, tmp_path):
    """Python's process pools run the main script again in each process they start; a script that labels at its
    top level would label again in every decoding process. It labels once, and decodes in the background."""
    import subprocess
    import sys

    root, job_id = toy_job
    script = tmp_path / "label_it.py"
    script.write_text(
        "from pathlib import Path\n"
        "from cliplabel_pipeline.core.job_folder import JobFolder\n"
        "from cliplabel_pipeline.core.labeller import Labeller\n"
        "from cliplabel_pipeline.core.pipeline import label_job\n"
        "from cliplabel_pipeline.core.settings import Settings\n"
        "from cliplabel_pipeline.core.values import LabelSettings\n"
        "from cliplabel_pipeline.core.encoding import decode_pool\n"
        f"lab = Labeller.load(Settings(model={toy_model!r}, device='cpu', cache_dir=Path({str(tmp_path / 'c')!r})))\n"
        f"job = JobFolder.open(Path({str(root)!r}), {job_id!r})\n"
        "print('labelled', len(label_job(lab, job, LabelSettings(batch_size=2)).records), flush=True)\n"
        "print('in the background:', decode_pool._background is not None)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("labelled") == 1 and "in the background: True" in done.stdout, done.stdout
    assert "background decoding failed" not in done.stderr


def _big_job(root: Path, n_items: int) -> str:
    job = write_toy_job(root, "big", seed=5, n_objects=8, size=(320, 240))
    objects = sorted((job / "objects").iterdir())
    for i in range(n_items):
        os.link(objects[i % len(objects)], job / "objects" / f"copy_{i:05d}.png")
    return "big"


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT to the process group"])
def test_decoding_processes_end_with_the_job_however_it_ends(how, toy_model, results_root, tmp_path):
    """A terminal's Ctrl-C, a supervisor's TERM, an OOM killer's KILL: the decoding processes (and the forkserver
    that starts them) are gone soon after the job, and none of them prints a traceback."""
    import signal
    import subprocess
    import sys
    import time

    job_id = _big_job(results_root, 3000)
    proc = subprocess.Popen([sys.executable, "-m", "cliplabel_pipeline.cli", "job", job_id, "--results-root",
                             str(results_root), "--model", toy_model, "--batch-size", "8"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=os.environ | {"CLIPLABEL_CACHE": str(tmp_path / "cache")})
    main = psutil.Process(proc.pid)
    deadline, helpers = time.monotonic() + 120, []
    while time.monotonic() < deadline and len(helpers) < 3 and proc.poll() is None:
        helpers = [p for p in main.children(recursive=True) if "forkserver" in " ".join(p.cmdline())]
        time.sleep(0.1)
    assert len(helpers) >= 3, "the job should decode in the background (a forkserver and its processes)"
    if how == "SIGKILL":
        proc.kill()
    elif how == "SIGTERM":
        proc.terminate()
    else:
        os.killpg(proc.pid, signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    gone, alive = psutil.wait_procs(helpers, timeout=15)
    for p in alive:  # the test cleans up what the code left, then fails
        p.kill()
    assert not alive, [p.cmdline() for p in alive]
    assert "Traceback" not in err, err


@pytest.mark.parametrize("given", ["1025", "100000000", "99999999999"])
def test_a_batch_too_large_to_pad_is_refused_in_one_line(given, tmp_path):
    """A short batch is padded to the batch size: a size far above any machine's memory is a usage error
    naming its bound, never a traceback from the allocator."""
    import subprocess
    import sys

    image = tmp_path / "one.png"
    image.write_bytes(_png(np.zeros((40, 40, 3), np.uint8)))
    done = subprocess.run([sys.executable, "-m", "cliplabel_pipeline.cli", "classify", str(image), "--batch-size",
                           given, "--model", "unused"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(f"argument --batch-size: must be between 1 and 1024, got {given}")
    env = os.environ | {"CLIPLABEL_BATCH_SIZE": given}
    done = subprocess.run([sys.executable, "-m", "cliplabel_pipeline.cli", "classify", str(image)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"CLIPLABEL_BATCH_SIZE must be between 1 and 1024, got {given}" in done.stderr
