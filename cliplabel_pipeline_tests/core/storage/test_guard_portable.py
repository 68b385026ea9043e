"""Guarded job access where the POSIX-only calls are missing (simulated Windows, ``windows_like``): the
promises kept by path, each tested with the hostile form it is there for."""

from __future__ import annotations

import os
import stat
import threading
import types

import pytest

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.storage import guard_portable, guard_posix, guarded
from cliplabel_pipeline.core.storage.guard_base import is_link

SECRET = b"outside the job: never read, never written\n"


@pytest.fixture
def job(tmp_path):
    job = tmp_path / "job"
    (job / "masks").mkdir(parents=True)
    (job / "masks" / "a.png").write_bytes(b"item")
    return job


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "a.png").write_bytes(SECRET)
    (folder / "labels.jsonl").write_bytes(SECRET)
    return folder


def test_the_portable_way_is_chosen_by_capability(windows_like):
    assert not hasattr(os, "O_NOFOLLOW") and not guard_posix.usable()
    assert guarded.backend_name() == "portable (msvcrt locks)"
    with pytest.raises(NotImplementedError):
        os.open("x", os.O_RDONLY, dir_fd=3)


def test_without_the_simulation_the_posix_way_stays():
    assert guard_posix.usable() and guarded.backend_name() == "posix (flock locks)"


def test_read_write_move_remove_inside_the_job(windows_like, job):
    guarded.write_file(job, "labels/masks/a.png.json", b"{}")
    assert guarded.read_bytes(job, "labels/masks/a.png.json") == b"{}"
    guarded.move(job, "masks/a.png", "quarantine/x/masks/a.png")
    assert guarded.read_bytes(job, "quarantine/x/masks/a.png") == b"item"
    guarded.move(job, "quarantine/x/masks/a.png", "masks/a.png")
    guarded.remove_empty_folders(job, "quarantine/x")
    assert not (job / "quarantine" / "x").exists()
    guarded.remove(job, "labels/masks/a.png.json")
    assert not (job / "labels" / "masks" / "a.png.json").exists()
    assert sorted(p.name for p in job.rglob("*")) == ["a.png", "labels", "masks", "masks", "quarantine"]


def test_a_linked_folder_on_the_way_is_never_read_through(windows_like, job, outside):
    os.symlink(outside, job / "objects")
    with pytest.raises(guarded.NotRegularFile, match="symbolic link"):
        guarded.read_bytes(job, "objects/a.png")
    assert not guarded.exists_regular(job, "objects/a.png")


def test_a_linked_item_and_a_fifo_are_refused_without_blocking(windows_like, job, outside):
    os.symlink(outside / "a.png", job / "masks" / "b.png")
    os.mkfifo(job / "masks" / "c.png")
    with pytest.raises(guarded.NotRegularFile, match="symbolic link"):
        guarded.read_bytes(job, "masks/b.png")
    with pytest.raises(guarded.NotRegularFile, match="a FIFO, not a regular file"):
        guarded.read_bytes(job, "masks/c.png")


def test_links_planted_where_cliplabel_writes_are_replaced_not_written_through(windows_like, job, outside):
    os.symlink(outside, job / "labels")
    os.symlink(outside / "labels.jsonl", job / "labels.jsonl")
    guarded.write_file(job, "labels/masks/a.png.json", b"{}")
    guarded.write_file(job, "labels.jsonl", b"new\n")
    assert (outside / "labels.jsonl").read_bytes() == SECRET and sorted(os.listdir(outside)) == ["a.png", "labels.jsonl"]
    assert is_real(job / "labels") and (job / "labels.jsonl").read_bytes() == b"new\n"


def is_real(path) -> bool:
    return stat.S_ISDIR(os.lstat(path).st_mode)


@pytest.mark.parametrize("swapped_back", [False, True])
def test_a_link_swapped_in_between_the_check_and_the_open_is_caught(windows_like, job, outside, monkeypatch,
                                                                     swapped_back):
    """The race the portable way cannot close: the file it opened lies outside, and the checks after opening
    refuse it, whether the link is still there or was swapped back already."""
    real_open = os.open

    def swap_then_open(path, flags, *args, **kwargs):
        if str(path).endswith("a.png"):
            os.rename(job / "masks", job / "masks.moved")
            os.symlink(outside, job / "masks")
            fd = real_open(path, flags, *args, **kwargs)
            if swapped_back:
                os.unlink(job / "masks")
                os.rename(job / "masks.moved", job / "masks")
            return fd
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", swap_then_open)
    with pytest.raises(guarded.NotRegularFile, match="changed while it was opened|leads elsewhere"):
        guarded.read_bytes(job, "masks/a.png")


def test_a_move_never_clobbers_and_never_moves_a_link(windows_like, job, outside):
    (job / "masks" / "b.png").write_bytes(b"other")
    with pytest.raises(CliplabelError, match="onto existing"):
        guarded.move(job, "masks/a.png", "masks/b.png")
    os.symlink(outside / "a.png", job / "masks" / "l.png")
    with pytest.raises(guarded.NotRegularFile, match="is a symbolic link, not moved"):
        guarded.move(job, "masks/l.png", "quarantine/l.png")
    assert (job / "masks" / "b.png").read_bytes() == b"other"


def test_remove_takes_the_link_not_its_target(windows_like, job, outside):
    os.symlink(outside / "a.png", job / "masks" / "l.png")
    guarded.remove(job, "masks/l.png")
    assert not os.path.lexists(job / "masks" / "l.png") and (outside / "a.png").read_bytes() == SECRET


def test_dead_writers_temps_are_swept_live_ones_kept(windows_like, job):
    dead = job / "labels" / f".x.json.{guarded._HOST}-999999999.0123abcd.tmp"
    live = job / "labels" / f".x.json.{guarded._HOST}-{os.getpid()}.4567abcd.tmp"
    dead.parent.mkdir()
    dead.write_bytes(b"")
    live.write_bytes(b"")
    assert guarded.sweep_temps(job, "labels") == 1
    assert not dead.exists() and live.exists()


def test_the_job_lock_is_exclusive_reentrant_and_says_who_holds_it(windows_like, job):
    held, release = threading.Event(), threading.Event()

    def holder():
        with guarded.locked(job, "_cliplabel/job.lock", wait_s=5):
            with guarded.locked(job, "_cliplabel/job.lock", wait_s=0):  # re-entrant in its thread
                held.set()
                release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    try:
        with pytest.raises(CliplabelError, match=rf"is busy: another cliplabel process \(.* pid {os.getpid()}\)"):
            with guarded.locked(job, "_cliplabel/job.lock", wait_s=0.3):
                pass
    finally:
        release.set()
        t.join()
    with guarded.locked(job, "_cliplabel/job.lock", wait_s=1):
        pass


@pytest.mark.parametrize("attrs, tag, linked", [
    (stat.FILE_ATTRIBUTE_REPARSE_POINT, 0xA0000003, True),   # a junction (mount point), which lstat calls a folder
    (stat.FILE_ATTRIBUTE_REPARSE_POINT, 0xA000000C, True),   # a symbolic link
    (stat.FILE_ATTRIBUTE_REPARSE_POINT, 0x9000001A, False),  # a cloud placeholder (OneDrive): a file like any other
    (0, 0, False),
])
def test_reparse_points_that_name_another_path_count_as_links(attrs, tag, linked):
    st = types.SimpleNamespace(st_mode=stat.S_IFDIR | 0o755, st_file_attributes=attrs, st_reparse_tag=tag)
    assert is_link(st) is linked


def test_a_name_the_host_reads_as_two_is_refused(windows_like, job, monkeypatch):
    monkeypatch.setattr(os, "altsep", "\\")
    with pytest.raises(CliplabelError, match="is not one file name on this system"):
        guard_portable.open_regular(job, "masks/..\\..\\outside.png")
