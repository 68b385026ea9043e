"""Every bad item is skipped with its reason, never a failed job; every entry is labelled or skipped."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from cliplabel_pipeline.core.storage.files import read_jsonl


def _outcome(job):
    labelled = {r["path"] for r in read_jsonl(job / "labels.jsonl")}
    skipped = {s["path"]: s["reason"] for s in read_jsonl(job / "skipped.jsonl")}
    return labelled, skipped


def test_links_fifos_folders_and_odd_names_are_each_skipped_with_a_reason(job, run, outside):
    obj = job / "objects"
    (obj / "loop.png").symlink_to(obj / "loop.png")
    (obj / "dangling.png").symlink_to(job / "nowhere.png")
    (obj / "inside_link.png").symlink_to(obj / "obj_00.png")
    os.mkfifo(obj / "fifo.png")
    (obj / "folder.png").mkdir()
    (obj / ".hidden.png").write_bytes((obj / "obj_00.png").read_bytes())
    (obj / ("n" * 251 + ".png")).write_bytes((obj / "obj_00.png").read_bytes())
    os.symlink(obj, obj / "cycle")  # a folder link back up: never walked
    bad_name = os.fsencode(str(obj)) + b"/bad\xff\xfe.png"
    with open(bad_name, "wb") as fh:
        fh.write((obj / "obj_01.png").read_bytes())
    assert run("job", "job") == 0
    labelled, skipped = _outcome(job)
    assert {"objects/obj_00.png", "objects/obj_01.png", "source.png"} <= labelled
    expected = {"objects/loop.png": "symbolic link", "objects/dangling.png": "symbolic link",
                "objects/inside_link.png": "symbolic link", "objects/fifo.png": "FIFO",
                "objects/folder.png": "a folder", "objects/.hidden.png": "hidden",
                "objects/" + "n" * 251 + ".png": "over the", "objects/cycle": "symbolic link",
                "objects/bad\\xff\\xfe.png": "not valid UTF-8"}
    for path, fragment in expected.items():
        assert fragment in skipped.get(path, ""), (path, skipped.get(path))


def test_a_device_node_is_skipped_and_never_read(job, run):
    try:
        os.mknod(job / "objects" / "zero.png", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    except PermissionError:
        pytest.skip("making a device node needs root")
    done = {}
    worker = threading.Thread(target=lambda: done.update(code=run("job", "job")), daemon=True)
    worker.start()
    worker.join(120)
    assert done.get("code") == 0, "labelling read the device"
    assert "a device" in _outcome(job)[1]["objects/zero.png"]


def test_an_item_swapped_for_a_link_between_listing_and_reading_is_skipped(job, labeller, outside):
    from cliplabel_pipeline.core.encoding.embedding import embed_images, job_loaders
    from cliplabel_pipeline.core.job_folder import JobFolder
    from cliplabel_pipeline.core.reading.items import list_job_items

    items = list_job_items(JobFolder.open(job.parent, "job"))
    (job / "objects" / "obj_02.png").unlink()
    (job / "objects" / "obj_02.png").symlink_to(outside / "precious.txt")
    embedded = embed_images(labeller.encoder, job_loaders(items), 4)
    reasons = {s.path: s.reason for s in embedded.skipped}
    assert "symbolic link" in reasons["objects/obj_02.png"]


def test_masks_or_objects_that_are_links_are_skipped_not_walked(job, run, outside):
    import shutil

    shutil.rmtree(job / "masks")
    (job / "masks").symlink_to(outside, target_is_directory=True)
    assert run("job", "job") == 0
    labelled, skipped = _outcome(job)
    assert not any(p.startswith("masks/") for p in labelled)
    assert "symbolic link" in skipped["masks"]


def test_control_characters_in_names_never_reach_the_terminal_raw(job, results_root, toy_model, tmp_path, capfd):
    from cliplabel_pipeline.cli import main

    (job / "objects" / "evil\x1b]0;pwned\x07.png").write_bytes(b"not an image")
    assert main(["-v", "job", "job", "--results-root", str(results_root), "--model", toy_model,
                 "--db", str(tmp_path / "x.duckdb")]) == 0
    assert main(["cleanup", "job", "--results-root", str(results_root), "--min-confidence", "1.0",
                 "--db", str(tmp_path / "x.duckdb")]) == 0
    captured = capfd.readouterr()
    assert "evil\\x1b]0;pwned\\x07.png" in captured.err  # said, escaped
    assert "\x1b" not in captured.out + captured.err and "\x07" not in captured.out + captured.err
