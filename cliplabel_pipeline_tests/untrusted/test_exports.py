"""Exports never overwrite the job's inputs or anything but a regular file, never read through a link, and
give ZIP entry names that extract safely everywhere."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import threading
import zipfile

import pytest

from cliplabel_pipeline.core.organising.zip_names import portable_name


@pytest.fixture
def labelled(job, run):
    assert run("job", "job") == 0
    return job


@pytest.mark.parametrize("target", ["source.png", "masks/obj_00.png", "objects/obj_01.png", "labels.jsonl"])
def test_output_onto_the_jobs_own_files_is_refused(labelled, run, capsys, target):
    before = (labelled / target).read_bytes()
    assert run("export", "job", "--format", "csv", "-o", str(labelled / target)) == 2
    assert "inside job 'job'" in capsys.readouterr().err
    assert (labelled / target).read_bytes() == before


@pytest.mark.parametrize("fmt", ["csv", "zip", "coco", "labelstudio"])
@pytest.mark.parametrize("target", ["other", "other/", "other/source.png", "other/masks/obj_00.png", ".", "new-job/"])
def test_output_into_another_job_or_the_results_root_is_refused(labelled, run, capsys, fmt, target):
    """The results root's folders are the segmentation service's jobs: an export of one job never lands in
    another's folder (its inputs least of all) nor beside them, in any format."""
    from cliplabel_pipeline.toyworld.jobs import write_toy_job

    other = write_toy_job(labelled.parent, "other", seed=6, n_objects=2)
    before = {p: p.read_bytes() for p in sorted(labelled.parent.rglob("*")) if p.is_file()}
    assert run("export", "job", "--format", fmt, "-o", str(labelled.parent / target)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to write the export" in err, err
    after = {p: p.read_bytes() for p in sorted(labelled.parent.rglob("*")) if p.is_file()}
    assert after == before and other.is_dir()


@pytest.mark.parametrize("fmt, out", [("csv", "export/"), ("coco", "export/coco/"), ("hf", "export/hf/")])
def test_output_under_the_job_s_export_folder_never_follows_a_link_planted_there(labelled, run, tmp_path, capsys,
                                                                                 fmt, out):
    victim = tmp_path / "victim"
    victim.mkdir()
    export = labelled / "export"
    if export.exists():
        import shutil

        shutil.rmtree(export)
    export.symlink_to(victim, target_is_directory=True)
    assert run("export", "job", "--format", fmt, "-o", str(labelled / out)) == 0
    assert list(victim.iterdir()) == []
    assert not export.is_symlink() and any(export.rglob("*"))


def test_output_onto_a_fifo_or_device_is_refused_and_it_stays(labelled, run, tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert run("export", "job", "--format", "zip", "-o", str(fifo)) == 2
    assert "not a regular file" in capsys.readouterr().err and fifo.is_fifo()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_output_into_a_folder_writes_the_export_inside_it(labelled, run, tmp_path):
    (tmp_path / "out").mkdir()
    assert run("export", "job", "--format", "zip", "-o", str(tmp_path / "out")) == 0
    assert zipfile.ZipFile(tmp_path / "out" / "job.zip").testzip() is None


def test_an_unwritable_output_is_one_line_and_leaves_no_temp(labelled, run, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert run("export", "job", "--format", "zip", "-o", str(tmp_path / "a_file" / "x.zip")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err and "a_file" in err


def test_dash_writes_the_export_to_standard_output(labelled, results_root):
    out = subprocess.run([sys.executable, "-m", "cliplabel_pipeline.cli", "export", "job", "--results-root",
                          str(results_root), "--format", "jsonl", "-o", "-"], capture_output=True, check=True)
    assert out.stdout == (labelled / "labels.jsonl").read_bytes()


def test_a_closed_pipe_ends_quietly(labelled, results_root):
    cmd = (f"{sys.executable} -m cliplabel_pipeline.cli export job --results-root {results_root} --format zip "
           f"-o - | head -c 10 > /dev/null")
    out = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
    assert "Traceback" not in out.stderr and "Error" not in out.stderr


def test_an_item_swapped_for_a_link_after_labelling_is_left_out_of_the_zip(labelled, run, outside, tmp_path):
    (labelled / "objects" / "obj_00.png").unlink()
    (labelled / "objects" / "obj_00.png").symlink_to(outside / "precious.txt")
    (labelled / "objects" / "obj_01.png").unlink()
    os.mkfifo(labelled / "objects" / "obj_01.png")
    done = {}
    worker = threading.Thread(target=lambda: done.update(code=run("export", "job", "--format", "zip", "-o",
                                                                  str(tmp_path / "x.zip"))), daemon=True)
    worker.start()
    worker.join(60)
    assert done.get("code") == 0, "the export hung on a FIFO or failed"
    with zipfile.ZipFile(tmp_path / "x.zip") as zf:
        assert all(b"must stay byte-identical" not in zf.read(n) for n in zf.namelist())
        skipped = zf.read("skipped.jsonl").decode()
    assert "objects/obj_00.png" in skipped and "objects/obj_01.png" in skipped


HOSTILE_NAMES = ["a\\..\\..\\evil.png", "..", "CON.png", "nul", "com1.txt", "a\x1b[31mred.png", "bidi\u202egnp.exe",
                 "trailing. ", "x:y*z?.png", "tab\there.png", "", "\udcff.png", "ok.png", "OK.png"]


def test_portable_names_have_no_separator_dots_controls_or_reserved_names():
    for name in HOSTILE_NAMES:
        safe = portable_name(name)
        assert safe and "/" not in safe and "\\" not in safe and safe not in (".", "..")
        assert all(c.isprintable() for c in safe) and "\u202e" not in safe
        assert safe.split(".")[0].upper() not in ("CON", "NUL", "COM1"), safe
        assert not safe.endswith((".", " "))


def test_zip_entries_stay_unique_even_when_names_collide(labelled, run, tmp_path):
    obj = labelled / "objects"
    png = (obj / "obj_00.png").read_bytes()
    for name in ("Same.png", "same.png", "SAME.png", "a\\b.png", "a_b.png", "CON.png"):
        (obj / name).write_bytes(png)
    assert run("job", "job") == 0
    assert run("export", "job", "--format", "zip", "-o", str(tmp_path / "x.zip")) == 0
    with zipfile.ZipFile(tmp_path / "x.zip") as zf:
        names = [n for n in zf.namelist() if "/" in n]
        folded = [n.casefold() for n in names]
        assert len(folded) == len(set(folded))
        for entry in names:
            assert ".." not in entry.split("/") and "\\" not in entry
        groups = __import__("json").loads((labelled / "groups.json").read_text())
        grouped_items = {i for g in groups["groups"] + groups["clusters"] for i in g["items"]}
        assert len(names) == len(grouped_items)  # nothing dropped
        assert zf.read("labels.jsonl") == (labelled / "labels.jsonl").read_bytes()
        assert io.BytesIO(zf.read("labels.csv")).read().startswith(b"path,")


def test_concurrent_exports_of_one_job_never_collide(labelled, results_root):
    procs = [subprocess.Popen([sys.executable, "-m", "cliplabel_pipeline.cli", "export", "job", "--results-root",
                               str(results_root), "--format", "zip"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert zipfile.ZipFile(labelled / "export" / "job.zip").testzip() is None
    assert not [p for p in (labelled / "export").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_output_onto_a_device_node_is_refused_and_it_stays_a_device(labelled, run, tmp_path, capsys):
    node = tmp_path / "null"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    assert run("export", "job", "--format", "csv", "-o", str(node)) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert stat.S_ISCHR(node.lstat().st_mode)


def test_an_output_ending_in_a_slash_is_a_folder_made_if_missing(labelled, run, tmp_path):
    """`-o out/` means a folder, as a person types it: the export goes inside it, never to a file named `out`."""
    assert run("export", "job", "--format", "zip", "-o", f"{tmp_path / 'out'}/") == 0
    assert (tmp_path / "out").is_dir() and (tmp_path / "out" / "job.zip").is_file()
    assert run("export", "job", "--format", "csv", "-o", f"{tmp_path / 'new' / 'sub'}/") == 0
    assert (tmp_path / "new" / "sub" / "job.csv").is_file()
