"""The report's words and pictures say what happened: kept and flagged counts, captions that are never cut."""

from __future__ import annotations

import dataclasses

from cliplabel_pipeline.core.job_folder import JobFolder
from cliplabel_pipeline.core.reporting.report import CAPTION, THUMB, _flagging_scores, _wrapped, contact_sheet
from cliplabel_pipeline.core.values import LabelRecord, ScoredLabel
from cliplabel_pipeline.toyworld.jobs import write_toy_job


def test_a_long_label_wraps_onto_more_lines_and_is_never_cut():
    label = "common european wall lizard"
    lines = _wrapped(f"{label} 0.97")
    assert " ".join(lines) == f"{label} 0.97" and all(len(line) <= 15 for line in lines) and len(lines) > 1
    assert _wrapped("x" * 40) == ["x" * 15, "x" * 15, "x" * 10]  # one long word: wrapped too, every letter kept


def test_a_flagged_item_is_captioned_with_the_score_that_flagged_it():
    rec = LabelRecord("masks/m.png", "mask", [ScoredLabel("purple square", 0.998)], "purple square", 0.998, 0.3,
                      0.9, True, match=0.43, flagged_by=["match"])
    assert _flagging_scores(rec) == "match 0.43"
    both = dataclasses.replace(rec, confidence=0.2, flagged_by=["confidence", "match"])
    assert _flagging_scores(both) == "conf 0.20, match 0.43"


def test_contact_sheet_cells_grow_to_hold_wrapped_captions(results_root):
    write_toy_job(results_root, "job", seed=2, n_objects=2)
    job = JobFolder.open(results_root, "job")
    items = ["objects/obj_00.png", "objects/obj_01.png"]
    kinds = dict.fromkeys(items, "object")
    short = contact_sheet(job, items, kinds, lambda: None, {i: "red star 0.97" for i in items})
    long = contact_sheet(job, items, kinds, lambda: None, {i: "common european wall lizard 0.97" for i in items})
    assert short.height == THUMB + CAPTION and long.height > short.height


def test_past_the_bound_the_largest_groups_are_pictured_and_the_rest_listed(labeller, results_root, monkeypatch):
    """A job of many labels draws a bounded number of contact sheets (the largest groups, every flagged
    cluster) and names the other groups with their sizes, so the report's cost does not grow with the bank."""
    from cliplabel_pipeline.core.pipeline import process_job
    from cliplabel_pipeline.core.reporting import report
    from cliplabel_pipeline.toyworld.draw import LABELS

    monkeypatch.setattr(report, "MAX_GROUP_SHEETS", 3)
    labels = LABELS[:6] + LABELS[:2]  # two labels twice: the largest groups
    write_toy_job(results_root, "many", seed=4, labels=labels, size=(512, 384))
    done = process_job(labeller, JobFolder.open(results_root, "many"))
    text = done.report.read_text()
    confident = done.groups.groups
    assert len(confident) > 3
    pictured = [line for line in text.splitlines() if line.startswith("![") and "group_" in line]
    assert len(pictured) == 3 + len(done.groups.clusters)
    largest = sorted(confident, key=lambda g: -len(g.items))[:3]
    for g in largest:
        assert f"### {g.name} ({len(g.items)})" in text
    assert f"### {len(confident) - 3} more groups, without pictures" in text
    for g in confident:
        if g not in largest:
            assert f"{g.name} ({len(g.items)})" in text and f"### {g.name} " not in text
    assert len(list((results_root / "many" / "report").glob("group_*.png"))) == len(pictured)


def test_a_mask_and_its_cut_out_are_captioned_apart(results_root):
    from cliplabel_pipeline.core.reading.images import load_rgb
    from cliplabel_pipeline.core.reporting.report import LINE, _wrapped_path

    assert _wrapped_path("masks/obj_00.png") == ["masks/", "obj_00.png"]
    assert _wrapped_path("objects/obj_00.png") == ["objects/", "obj_00.png"]
    assert _wrapped_path("objects/a_very_long_file_name.png") == ["objects/", "a_very_long_fil", "e_name.png"]
    write_toy_job(results_root, "job", seed=2, n_objects=2)
    job = JobFolder.open(results_root, "job")
    items = ["masks/obj_00.png", "objects/obj_00.png"]

    def source():
        with job.open_item("source.png") as fh:
            return load_rgb(fh)[0]
    sheet = contact_sheet(job, items, {"masks/obj_00.png": "mask", "objects/obj_00.png": "object"}, source,
                          dict.fromkeys(items, "red star 0.97"), per_row=2)
    cell_w = sheet.width // 2
    first_line = (0, THUMB + 1, cell_w, THUMB + 1 + LINE)  # the folder's line under each thumbnail
    mask_words = sheet.crop(first_line).tobytes()
    object_words = sheet.crop((cell_w + first_line[0], first_line[1], cell_w + first_line[2], first_line[3])).tobytes()
    assert mask_words != object_words


def test_a_flagged_group_is_headed_by_what_flagged_it_not_by_confidence(labeller, results_root):
    from cliplabel_pipeline.core.pipeline import process_job

    write_toy_job(results_root, "job", seed=7)
    done = process_job(labeller, JobFolder.open(results_root, "job"))
    text = done.report.read_text()
    assert done.groups.clusters
    for c in done.groups.clusters:
        assert f"### flagged, nearest concept: {c.name} ({len(c.items)})" in text
    assert "low confidence, nearest concept" not in text
