"""Many small files written at once (an export's per-item JSON): the same promises as one ``write_file`` at a
time, on both ways of guarded access (folder descriptors, and by path as on Windows)."""

from __future__ import annotations

import os

import pytest

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.storage import guard_posix, guarded

SECRET = b"outside the job: never written\n"


@pytest.fixture(params=["posix", "portable"])
def way(request):
    """Each test runs with folder descriptors, then as on Windows (``windows_like``)."""
    if request.param == "portable":
        request.getfixturevalue("windows_like")
    assert guarded.backend_name().startswith(request.param)
    return request.param


def _temps(root) -> list[str]:
    return [p.name for p in root.rglob("*.tmp")]


def test_every_file_lands_whole_in_its_folder(way, tmp_path):
    files = [(f"labels/{kind}/obj_{i:03d}.png.json", f'{{"i": {i}}}'.encode()) for kind in ("masks", "objects")
             for i in range(150)]
    assert guarded.write_files(tmp_path, iter(files)) == 300
    for rel, data in files:
        assert (tmp_path / rel).read_bytes() == data
    assert not _temps(tmp_path)


def test_more_folders_than_are_held_open_at_once(way, tmp_path, monkeypatch):
    monkeypatch.setattr(guard_posix, "FOLDERS_AT_ONCE", 3)
    files = [(f"labels/f{i}/item.json", bytes([65 + i])) for i in range(10)]
    assert guarded.write_files(tmp_path, files) == 10
    assert [(tmp_path / rel).read_bytes() for rel, _ in files] == [data for _, data in files]


def test_a_link_planted_at_a_target_is_replaced_and_its_target_untouched(way, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(SECRET)
    job = tmp_path / "job"
    (job / "labels").mkdir(parents=True)
    (job / "labels" / "a.json").symlink_to(outside)
    guarded.write_files(job, [("labels/a.json", b"{}"), ("labels/b.json", b"{}")])
    assert outside.read_bytes() == SECRET
    assert not (job / "labels" / "a.json").is_symlink() and (job / "labels" / "a.json").read_bytes() == b"{}"


def test_a_link_planted_at_a_folder_is_never_written_through(way, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    job = tmp_path / "job"
    job.mkdir()
    (job / "labels").symlink_to(outside, target_is_directory=True)
    try:
        guarded.write_files(job, [("labels/a.json", b"{}")])
    except CliplabelError:
        pass  # refusing is as good as replacing the link: what matters is that nothing lands outside
    assert list(outside.iterdir()) == []


def test_a_target_that_is_not_a_regular_file_refuses_the_batch_and_leaves_no_temp_file(way, tmp_path):
    (tmp_path / "labels" / "b.json").mkdir(parents=True)
    (tmp_path / "labels" / "a.json").write_bytes(b"old")
    with pytest.raises(CliplabelError, match="b.json"):
        guarded.write_files(tmp_path, [("labels/a.json", b"new"), ("labels/b.json", b"{}"), ("labels/c.json", b"{}")])
    assert not _temps(tmp_path)
    assert not (tmp_path / "labels" / "c.json").exists()
    if way == "posix":  # batched: nothing is renamed before every temp file is written
        assert (tmp_path / "labels" / "a.json").read_bytes() == b"old"


def test_a_folder_that_cannot_be_written_is_one_clear_error(way, tmp_path):
    if os.geteuid() == 0:
        (tmp_path / "labels").write_bytes(b"a file where the folder should be")
    else:
        (tmp_path / "labels").mkdir(mode=0o500)
    with pytest.raises(CliplabelError, match="labels"):
        guarded.write_files(tmp_path, [("labels/a.json", b"{}")])
    assert not _temps(tmp_path)
