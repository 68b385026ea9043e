"""Windows' rules for names, each checked against what ``PureWindowsPath`` (Windows' own parsing, on any
system) makes of the name, and applied where cliplabel takes or makes names."""

from __future__ import annotations

from pathlib import PureWindowsPath

import pytest

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import validate_job_id
from cliplabel_pipeline.core.organising.zip_names import portable_name
from cliplabel_pipeline.core.storage import windows_names


@pytest.mark.parametrize("name, problem", [
    ("CON", "'CON' is a device name on Windows"),
    ("nul.txt", "'nul' is a device name on Windows"),
    ("Com1 .png", "'Com1' is a device name on Windows"),
    ("LPT9", "'LPT9' is a device name on Windows"),
    ("a:b", "':' is not allowed in a Windows name"),
    ("a*b", "'*' is not allowed in a Windows name"),
    ('a"b', "'\"' is not allowed in a Windows name"),
    ("a|b", "'|' is not allowed in a Windows name"),
    ("a?b", "'?' is not allowed in a Windows name"),
    ("a<b>", "'<' is not allowed in a Windows name"),
    ("a\x01b", "a control character is not allowed in a Windows name"),
    ("trailing.", "Windows drops a name's trailing dots and spaces"),
    ("trailing ", "Windows drops a name's trailing dots and spaces"),
    ("x" * 256, "longer than Windows' 255 characters for a name"),
])
def test_each_rule_names_its_problem(name, problem):
    assert windows_names.name_problem(name) == problem


@pytest.mark.parametrize("name", ["job-1", "CONSOLE", "com10", "a.b.c", "été", "x" * 255, "😀" * 127])
def test_names_windows_holds_pass(name):
    assert windows_names.name_problem(name) is None


@pytest.mark.parametrize("name", ["a:b", "C:x", "a\\b", "a/b"])
def test_separators_and_drives_are_what_windows_would_split_on(name):
    """What the rule refuses, Windows' own parsing reads as more than one plain name."""
    pure = PureWindowsPath(name)
    assert pure.drive or len(pure.parts) > 1 or ":" in pure.name  # ':' names an alternate data stream
    assert windows_names.name_problem(name) is not None


@pytest.mark.parametrize("name", ["CON", "nul.txt", "com1"])
def test_device_names_are_reserved_by_windows_itself(name):
    assert PureWindowsPath(name).is_reserved() and windows_names.name_problem(name) is not None


def test_trailing_dots_and_spaces_collapse_names_on_windows():
    assert windows_names.name_problem("a.") and windows_names.name_problem("a ")


def test_paths_and_case_clashes():
    assert windows_names.path_problem("masks/sub/a.png") is None
    assert windows_names.path_problem("masks/AUX/a.png") == "'AUX': 'AUX' is a device name on Windows"
    assert windows_names.path_problem("C:/x.png") == "Windows reads it as a drive or an absolute path"
    assert windows_names.case_clashes(["masks/A.png", "masks/b.png", "masks/a.png"]) == [("masks/A.png", "masks/a.png")]


@pytest.mark.parametrize("job_id", ["CON", "nul.txt", "ab:c", "job.", "job ", "a*", "a|b", 'a"b', "a<b", "a?"])
def test_a_job_id_windows_cannot_hold_is_refused_everywhere_with_one_line(job_id):
    with pytest.raises(CliplabelError, match=r"^invalid job id .*: .*Windows.* \(a job id must be a folder name on "
                                             r"every system, Windows included\)$") as err:
        validate_job_id(job_id)
    assert "\n" not in str(err.value)


def test_a_job_id_windows_reads_as_a_drive_is_refused_as_before():
    with pytest.raises(CliplabelError, match=r"^invalid job id 'a:b': a job id is a single folder name"):
        validate_job_id("a:b")


@pytest.mark.parametrize("name", ["CON.png", "a:b.png", "x.png.", "LPT1"])
def test_zip_entry_names_follow_the_same_rules(name):
    assert windows_names.name_problem(portable_name(name)) is None


def test_items_windows_could_not_hold_are_listed_with_one_line(results_root):
    from cliplabel_pipeline.core.job_folder import JobFolder
    from cliplabel_pipeline.core.reading.items import list_job_items, windows_note
    from cliplabel_pipeline.toyworld.jobs import write_toy_job

    job = write_toy_job(results_root, "j1", seed=5, n_objects=2)
    png = (job / "masks" / "obj_00.png").read_bytes()
    for name in ("a:b.png", "OBJ_00.png", "CON.png"):
        (job / "masks" / name).write_bytes(png)
    items = list_job_items(JobFolder.open(results_root, "j1"))
    assert {"masks/a:b.png", "masks/OBJ_00.png", "masks/CON.png"} <= {i.path for i in items.items}  # still labelled
    note = windows_note(items)
    assert note.startswith("job j1: 3 item path(s) could not exist on Windows (") and "\n" not in note
    assert note.endswith("labelled here, but this job folder cannot be copied to Windows as it is")
    for name in ("a:b.png", "OBJ_00.png", "CON.png"):
        (job / "masks" / name).unlink()
    assert windows_note(list_job_items(JobFolder.open(results_root, "j1"))) is None
