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
