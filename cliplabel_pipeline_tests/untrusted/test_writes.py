"""Every write stays inside the job: a link planted where cliplabel writes is replaced, never followed."""

from __future__ import annotations

import os
import stat

import pytest

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.storage import guarded
from cliplabel_pipeline_tests.untrusted.conftest import snapshot


@pytest.mark.parametrize("folder", ["labels", "export", "report", "_cliplabel", "quarantine"])
def test_a_link_planted_as_an_output_folder_is_replaced_and_its_target_untouched(job, run, outside, folder):
    (job / folder).symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    assert run("job", "job") == 0
    if folder == "quarantine":
        assert run("cleanup", "job", "--min-confidence", "0.9999", "--apply") == 0
    assert snapshot(outside) == before
    assert not (job / folder).is_symlink() and (job / folder).is_dir()


@pytest.mark.parametrize("name", ["labels.jsonl", "groups.json", "labels.csv", "metrics.json", "manifest.json",
                                  "report/report.md", "report/confidence.png", "_cliplabel/embeddings.npy",
                                  "export/job.zip", "labels/objects/obj_00.png.json"])
def test_a_link_planted_as_an_output_file_is_replaced_not_written_through(job, run, outside, name):
    (job / name).parent.mkdir(parents=True, exist_ok=True)
    (job / name).symlink_to(outside / "precious.txt")
    assert run("job", "job") == 0
    assert (outside / "precious.txt").read_text() == "must stay byte-identical\n"
    assert not (job / name).is_symlink() and (job / name).is_file()


def test_a_link_swapped_in_between_runs_deep_inside_an_output_folder(job, run, outside):
    assert run("job", "job") == 0
    (job / "labels" / "objects").rename(job / "labels" / "gone")
    (job / "labels" / "objects").symlink_to(outside, target_is_directory=True)
    assert run("job", "job") == 0
    assert set(os.listdir(outside)) == {"precious.txt"}


def test_outputs_follow_the_process_umask(job, run):
    old = os.umask(0o022)
    try:
        assert run("job", "job") == 0
    finally:
        os.umask(old)
    for name in ("labels.jsonl", "labels.csv", "export/job.zip", "report/report.md"):
        assert stat.S_IMODE((job / name).stat().st_mode) == 0o644, name
    assert stat.S_IMODE((job / "report").stat().st_mode) == 0o755


def test_temp_files_a_killed_writer_left_are_swept_and_a_live_writers_kept(job, run):
    dead = job / f".labels.jsonl.{guarded._HOST}-999999999.0123abcd.tmp"
    live = job / f".labels.jsonl.{guarded._HOST}-{os.getppid()}.4567abcd.tmp"
    dead.write_text("half")
    live.write_text("being written")
    assert run("job", "job") == 0
    assert not dead.exists() and live.exists()


def test_a_job_folder_that_is_itself_a_link_is_refused(results_root, job, run, capsys):
    (results_root / "alias").symlink_to(job, target_is_directory=True)
    assert run("job", "alias") == 2
    assert "unknown job 'alias'" in capsys.readouterr().err


def test_a_job_id_of_300_characters_is_one_line(run, capsys):
    assert run("job", "x" * 300) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "longer than" in err


def test_job_folder_refuses_paths_that_leave_the_job(job):
    folder = JobFolder.open(job.parent, "job")
    for bad in ("../escape.txt", "/etc/passwd", "labels/../../x"):
        with pytest.raises(Exception, match="refusing|outside"):
            folder.write(folder.path / bad if not bad.startswith("/") else bad, b"x")
    assert not (job.parent / "escape.txt").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the point is a writer that file modes cannot stop")
def test_as_root_a_read_only_file_outside_behind_a_link_stays_byte_identical(job, run, outside):
    precious = outside / "precious.txt"
    precious.chmod(0o444)  # no protection from root: only never following the link keeps it safe
    before = snapshot(outside)
    for name in ("labels.jsonl", "labels.csv", "export/job.zip", "quarantine"):
        (job / name).parent.mkdir(parents=True, exist_ok=True)
        (job / name).symlink_to(precious if name != "quarantine" else outside)
    assert run("job", "job") == 0
    assert run("cleanup", "job", "--min-confidence", "0.99999", "--apply") == 0
    assert run("export", "job", "--format", "zip") == 0
    assert run("restore", "job") == 0
    assert snapshot(outside) == before
