"""The ``cliplabel`` command line, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cliplabel_pipeline.cli import main
from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline_tests.untrusted.promises import ROOT_FORMS, results_root_arg


@pytest.fixture(params=ROOT_FORMS)
def root_arg(request, results_root, monkeypatch) -> str:
    """``--results-root`` for ``results_root`` in each form a user types (absolute, relative, through ``..``,
    through a link), the working folder set to match."""
    cwd, arg = results_root_arg(results_root.parent, request.param)
    monkeypatch.chdir(cwd)
    return arg


def _nothing_outside(results_root) -> None:
    """Only the results root, the working folders, the link and the lineage database beside the root."""
    base = results_root.parent
    assert not any((base / "cwd").iterdir()), sorted((base / "cwd").iterdir())
    assert {p.name for p in base.iterdir()} <= {"results", "cwd", "link", "cliplabel.duckdb", "cliplabel.duckdb.lock",
                                                "cliplabel.duckdb.wal"}


def test_classify_prints_one_json_record_per_image(toy_model, toy_job, capsys):
    root, job_id = toy_job
    objects = sorted((root / job_id / "objects").iterdir())
    assert main(["classify", *map(str, objects), "--model", toy_model, "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4 and records[0]["top1"] == "red star" and len(records[0]["labels"]) == 2


def test_classify_in_int8_gives_the_same_top1(toy_model, toy_job, capsys):
    root, job_id = toy_job
    objects = sorted((root / job_id / "objects").iterdir())
    assert main(["classify", *map(str, objects), "--model", toy_model, "--precision", "int8"]) == 0
    top1 = [json.loads(line)["top1"] for line in capsys.readouterr().out.splitlines()]
    assert top1[:2] == ["red star", "blue circle"] and len(top1) == 4


def test_classify_with_a_user_label_list(toy_model, toy_job, capsys):
    root, job_id = toy_job
    image = root / job_id / "objects" / "obj_01.png"
    assert main(["classify", str(image), "--model", toy_model, "--labels", "blue circle,red star"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["top1"] == "blue circle" and {label["name"] for label in record["labels"]} == {"blue circle", "red star"}


def test_job_writes_labels_jsonl(toy_model, toy_job, root_arg, capsys, monkeypatch):
    root, job_id = toy_job
    monkeypatch.setenv("CLIPLABEL_RESULTS_ROOT", root_arg)
    assert main(["job", job_id, "--results-root", root_arg, "--model", toy_model]) == 0
    out = capsys.readouterr().out
    assert "9 labelled" in out
    assert len(read_jsonl(root / job_id / "labels.jsonl")) == 9
    [shown] = [line.split("labels: ", 1)[1] for line in out.splitlines() if line.strip().startswith("labels: ")]
    assert os.path.samefile(shown, root / job_id / "labels.jsonl")  # the path it prints is where it wrote
    assert sorted(p.name for p in (root / job_id).iterdir() if p.is_dir()) == [
        "_cliplabel", "export", "labels", "masks", "objects", "report"]  # never a nested results/<job>/ copy
    assert (root.parent / "cliplabel.duckdb").is_file()  # the lineage beside the results root, in every form
    _nothing_outside(root)


@pytest.mark.parametrize("job_id", ["..", "../etc", "/etc", "a/b", "a\\b", "C:evil"])
def test_job_ids_cannot_escape_the_results_root(results_root, root_arg, toy_model, job_id, capsys):
    assert main(["job", job_id, "--results-root", root_arg, "--model", toy_model]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cliplabel: error: invalid job id") and "\n" not in err


def test_unknown_job_is_one_readable_line(results_root, root_arg, toy_model, capsys):
    assert main(["job", "nope", "--results-root", root_arg, "--model", toy_model]) == 2
    err = capsys.readouterr().err
    assert "unknown job 'nope'" in err and err.count("\n") == 1
    _nothing_outside(results_root)


@pytest.mark.parametrize("root_arg", [f if f == "absolute" else pytest.param(f, marks=pytest.mark.slow)
                                      for f in ROOT_FORMS], indirect=True)  # a subprocess each: the rest slow
def test_missing_model_exits_nonzero_with_one_line_and_no_traceback(toy_job, root_arg, tmp_path):
    root, job_id = toy_job
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_CACHE": str(tmp_path / "empty"), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "cliplabel_pipeline.cli", "job", job_id, "--results-root", root_arg,
                           "--model", "openai/clip-vit-base-patch32"], capture_output=True, text=True, env=env,
                          cwd=os.getcwd())
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "cliplabel model pull" in proc.stderr


def test_a_damaged_photo_is_labelled_without_third_party_warnings(toy_model, tmp_path):
    """A phone MPO with a broken index and a corrupt EXIF block: Pillow reads its base JPEG and warns twice."""
    from PIL import Image

    from cliplabel_pipeline_tests.hostile_images import mpo

    data = mpo(Image.new("RGB", (80, 60), (200, 10, 10)), Image.new("RGB", (80, 60), (200, 10, 10)))
    at = data.find(b"MPF\x00")
    (tmp_path / "phone.jpg").write_bytes(data[:at + 8] + b"\xff" * 8 + data[at + 16:])
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # every warning a user's Python would show, once
    proc = subprocess.run([sys.executable, "-m", "cliplabel_pipeline.cli", "classify", str(tmp_path / "phone.jpg"),
                           "--model", toy_model], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["top1"]
    assert "Warning" not in proc.stderr, proc.stderr


def test_bad_argument_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["classify", "x.png", "--top-k", "0"])
    assert exc.value.code == 2 and "must be between 1 and 100, got 0" in capsys.readouterr().err


def test_demo_writes_and_labels_toy_jobs(results_root, root_arg, capsys):
    assert main(["demo", "--results-root", root_arg, "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "results root:" in out
    for job_id in ("demo-000", "demo-001"):
        assert len(read_jsonl(results_root / job_id / "labels.jsonl")) >= 5
        assert not (results_root / job_id / "results").exists()
    _nothing_outside(results_root)


@pytest.mark.parametrize("labels", ["", ",", " , ,"])
def test_labels_that_name_nothing_are_a_usage_error_not_the_bank(labels, tmp_path, toy_model, capsys):
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    assert main(["classify", str(tmp_path / "red.png"), "--model", toy_model, "--labels", labels]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "names no label" in err[0]


@pytest.mark.parametrize("argv, option", [
    (["job", "job-1", "--results-root=  "], "--results-root"), (["serve", "--results-root", "\t "], "--results-root"),
    (["demo", "--results-root", " "], "--results-root"), (["restore", "job-1", "--results-root", "r", "--db", "  "], "--db"),
    (["classify", "x.png", "--labels-file", "  "], "--labels-file"),
    (["job", "job-1", "--results-root", "r", "--templates-file", " "], "--templates-file"),
])
def test_a_path_option_of_spaces_alone_is_a_usage_error_not_a_folder(argv, option, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    given = argv[-1].split("=", 1)[-1]
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"cliplabel {argv[0]}: error: argument {option}: must not be blank, got {given!r}"


def test_a_misspelled_variable_is_one_warning_line_and_the_command_runs(toy_model, toy_job, capsys, monkeypatch):
    from cliplabel_pipeline.core import settings

    monkeypatch.setattr(settings, "_SAID", set())
    monkeypatch.setenv("CLIPLABEL_TOPK", "1")
    root, job_id = toy_job
    obj = sorted((root / job_id / "objects").iterdir())[0]
    assert main(["classify", str(obj), "--model", toy_model]) == 0
    out = capsys.readouterr()
    assert out.err.splitlines()[0] == ("cliplabel: warning: CLIPLABEL_TOPK is ignored: it is not a cliplabel "
                                       "variable; did you mean CLIPLABEL_TOP_K?")
    assert len(json.loads(out.out)["labels"]) == 3  # the default top-k: the misspelled one was not read


def test_model_pull_of_the_toy_folder_says_there_is_nothing_to_download(monkeypatch, capsys):
    """As docs/cli.md runs it: CLIPLABEL_MODEL names the toy folder, relative to the repository root."""
    from cliplabel_pipeline.toyworld.demo import TOY_MODEL_DIR

    repo = TOY_MODEL_DIR.parents[2]
    monkeypatch.chdir(repo)
    monkeypatch.setenv("CLIPLABEL_MODEL", str(TOY_MODEL_DIR.relative_to(repo)))
    assert main(["model", "pull"]) == 0
    out, err = capsys.readouterr()
    assert out == ("cliplabel_pipeline/toyworld/model is a local folder: nothing to download (--model and "
                   "CLIPLABEL_MODEL use it as it is)\n") and err == ""


@pytest.mark.parametrize("value", ["cliplabel_pipeline/toyworld/no-such-model", "./models/clip", "a b"])
def test_model_pull_of_neither_a_folder_nor_a_hub_id_is_one_plain_line(value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["model", "pull", "--model", value]) == 2
    err = capsys.readouterr().err
    assert err == (f"cliplabel: error: {value!r} is neither a local folder nor a Hugging Face model id (owner/name, "
                   f"such as openai/clip-vit-base-patch32): nothing to download\n")
    assert "HFValidationError" not in err and not any(tmp_path.iterdir())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")
@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_classify_of_a_folder_reports_its_fifo_and_dangling_link_once_each(toy_model, toy_job, tmp_path,
                                                                           monkeypatch, capsys, verbose):
    """As a user types it: a relative folder holding an image, a FIFO and a link to nothing, each named *.png."""
    root, job_id = toy_job
    folder = tmp_path / "shots"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes((root / job_id / "objects" / "obj_00.png").read_bytes())
    os.mkfifo(folder / "pipe.png")
    (folder / "sub" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    monkeypatch.chdir(tmp_path)
    assert main([*verbose, "classify", "shots", "--model", toy_model]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["path"] for line in out.splitlines()] == ["shots/a.png"]
    assert err.count("skipped shots/pipe.png: not a regular file") == 1
    assert err.count("skipped shots/sub/gone.png: cannot open: No such file or directory") == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")
def test_job_with_v_logs_every_item_its_listing_skipped(toy_model, toy_job, capsys):
    root, job_id = toy_job
    objects = root / job_id / "objects"
    os.mkfifo(objects / "obj_08.png")
    (objects / "obj_09.png").symlink_to(objects / "obj_00.png")
    assert main(["-v", "job", job_id, "--results-root", str(root), "--model", toy_model]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped objects/obj_08.png: a FIFO, not a regular file") == 1
    assert err.count("skipped objects/obj_09.png: symbolic link") == 1
