"""Reviews come back: a Label Studio export, an edited COCO file and cliplabel's own review lines, taken with
``cliplabel review``; the label of record follows them through records, CSV, groups, DuckDB, cleanup, restore
and a new run of the job."""

from __future__ import annotations

import csv
import io
import json

import pytest

from cliplabel_pipeline.cli import main
from cliplabel_pipeline.core.storage.files import read_jsonl
from cliplabel_pipeline.core.storage.database import query
from cliplabel_pipeline_tests.core.organising.conftest import export


def run(job, *args):
    root, job_id, db = job
    return main([args[0], job_id, "--results-root", str(root), "--db", str(db), *args[1:]])


def records_of(job):
    root, job_id, _ = job
    return {r["path"]: r for r in read_jsonl(root / job_id / "labels.jsonl")}


def annotation(label, when, cancelled=False, person=1, reject=False):
    result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
    if reject:
        result = [{"from_name": "decision", "to_name": "image", "type": "choices", "value": {"choices": ["reject"]}}]
    return {"id": hash(when) % 1000, "result": result, "was_cancelled": cancelled, "completed_by": person,
            "created_at": when, "updated_at": when}


def labelstudio_review_file(job, tmp_path):
    """What Label Studio's JSON export gives back after a person worked through our tasks: a correction (with an
    older annotation superseded), an acceptance, a cancelled annotation and an untouched task."""
    out = export(job, "labelstudio", tmp_path / "ls")
    tasks = json.loads((out / "tasks.json").read_text())
    by_item = {t["data"]["item"]: t for t in tasks}
    for i, t in enumerate(tasks):
        t["id"] = i + 1
    by_item["masks/obj_00.png"]["annotations"] = [annotation("yellow triangle", "2026-01-01T10:00:00Z"),
                                                  annotation("blue circle", "2026-01-02T10:00:00Z")]
    top1 = by_item["objects/obj_01.png"]["predictions"][0]["result"][0]["value"]["choices"][0]
    by_item["objects/obj_01.png"]["annotations"] = [annotation(top1, "2026-01-01T11:00:00Z", person=2)]
    by_item["objects/obj_02.png"]["annotations"] = [annotation("red star", "2026-01-03T10:00:00Z", cancelled=True)]
    path = tmp_path / "project-1-at-2026.json"
    path.write_text(json.dumps(tasks))
    return path


def test_labelstudio_export_corrects_and_accepts_exactly_those_items(own_job, tmp_path, capsys):
    root, job_id, db = own_job
    before = records_of(own_job)
    review_file = labelstudio_review_file(own_job, tmp_path)
    assert run(own_job, "review", "--from", str(review_file), "--reviewer", "ana") == 0
    out = capsys.readouterr()
    assert "1 accepted, 1 corrected, 0 rejected" in out.out
    assert "cancelled ones are skipped" in out.err and "no annotation yet" in out.err
    after = records_of(own_job)
    changed = {p for p in after if after[p] != before[p]}
    assert changed == {"masks/obj_00.png", "objects/obj_01.png"}
    assert after["masks/obj_00.png"]["label"] == "blue circle"  # the newer annotation wins
    assert after["masks/obj_00.png"]["label_source"] == "review" and after["masks/obj_00.png"]["decision"] == "correct"
    assert after["objects/obj_01.png"]["decision"] == "accept"
    for p in changed:  # what the model said stays as it was
        assert {k: after[p][k] for k in ("top1", "confidence", "labels", "match")} == {
            k: before[p][k] for k in ("top1", "confidence", "labels", "match")}
    rows = {r["path"]: r for r in csv.DictReader(io.StringIO((root / job_id / "labels.csv").read_text()))}
    assert rows["masks/obj_00.png"]["label"] == "blue circle" and rows["masks/obj_00.png"]["label_source"] == "review"
    assert {p for p, r in rows.items() if r["label_source"] == "review"} == changed
    groups = json.loads((root / job_id / "groups.json").read_text())
    blue = next(g for g in groups["groups"] if g["name"] == "blue circle")
    assert "masks/obj_00.png" in blue["items"]
    assert not any("masks/obj_00.png" in g["items"] for g in groups["groups"] if g["name"] != "blue circle")
    assert query(db, "SELECT label, label_source FROM labels WHERE path = 'masks/obj_00.png'") == [
        ("blue circle", "review")]
    assert sorted(query(db, "SELECT path, decision, reviewer FROM reviews")) == [
        ("masks/obj_00.png", "correct", "1"), ("objects/obj_01.png", "accept", "2")]
    assert len(read_jsonl(root / job_id / "reviews.jsonl")) == 2


def test_reviews_survive_a_new_run_cleanup_and_restore(own_job, tmp_path, toy_model, capsys):
    root, job_id, db = own_job
    lines = tmp_path / "decisions.jsonl"
    lines.write_text(json.dumps({"path": "objects/obj_03.png", "decision": "reject"}) + "\n"
                     + json.dumps({"path": "masks/obj_01.png", "decision": "correct", "label": "red star"}) + "\n")
    assert run(own_job, "review", "--from", str(lines)) == 0
    capsys.readouterr()
    assert records_of(own_job)["objects/obj_03.png"]["label"] is None
    # the rejection goes at the next cleanup, whatever the thresholds; the correction never does
    assert run(own_job, "cleanup", "--min-confidence", "0.0", "--min-match", "0.0", "--apply") == 0
    assert capsys.readouterr().out.split("\t")[0] == "objects/obj_03.png"
    assert not (root / job_id / "objects/obj_03.png").exists()
    assert run(own_job, "cleanup", "--min-confidence", "1.0", "--min-match", "1.0") == 0
    assert "masks/obj_01.png" not in capsys.readouterr().out
    assert run(own_job, "restore") == 0
    assert records_of(own_job)["objects/obj_03.png"]["decision"] == "reject"
    assert main(["job", job_id, "--results-root", str(root), "--model", toy_model, "--precision", "fp32",
                 "--db", str(db)]) == 0
    after = records_of(own_job)
    assert after["masks/obj_01.png"]["label"] == "red star" and after["masks/obj_01.png"]["label_source"] == "review"
    assert after["objects/obj_03.png"]["decision"] == "reject"
    assert query(db, "SELECT label_source FROM labels WHERE path = 'masks/obj_01.png'") == [("review",)]
    assert len(read_jsonl(root / job_id / "reviews.jsonl")) == 2


@pytest.mark.parametrize("content, words", [
    (b"{not json", "line 1 is not JSON"),
    (b'{"path": "masks/obj_00.png", "decision": "maybe"}\n', "a decision (accept, correct, reject)"),
    (b'{"path": "masks/obj_00.png", "decision": "correct"}\n', "a correction needs the right label"),
    (b'{"images": [], "annotations": [{"id": 1, "category_id": 9}], "categories": []}', "not among the categories"),
    (b"\xff\xfe\x00", "can't decode"),
    (b'{"path": "masks/obj_00.png", "decision": "correct", "label": "evil\\nsecond class"}\n', "line break"),
    (b'{"path": "masks/obj_00.png", "decision": "correct", "label": "  "}\n', "non-empty string"),
    (b'[{"data": {"item": "masks/obj_00.png"}, "annotations": [{"result": [{"from_name": "label", "type": "choices",'
     b' "value": {"choices": "reject"}}]}]}]', "lists of labels"),
])
def test_a_malformed_file_changes_nothing_and_ends_in_one_line(own_job, tmp_path, capsys, content, words):
    root, job_id, _ = own_job
    before = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    bad = tmp_path / "bad-reviews.json"
    bad.write_bytes(content)
    assert run(own_job, "review", "--from", str(bad)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cliplabel: error: ") and "bad-reviews.json" in err[0], err
    assert words in err[0]
    assert {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} == before


def test_coco_edited_in_another_tool_comes_back_by_path_or_by_overlap(own_job, tmp_path, capsys):
    pytest.importorskip("pycocotools")
    out = export(own_job, "coco", tmp_path / "coco")
    doc = json.loads((out / "annotations.json").read_text())
    names = {c["name"]: c["id"] for c in doc["categories"]}
    if "green square" not in names:
        doc["categories"].append({"id": 99, "name": "green square", "supercategory": ""})
        names["green square"] = 99
    by_path = {a["path"]: a for a in doc["annotations"]}
    by_path["masks/obj_00.png"]["category_id"] = names["green square"]  # matched by its path
    stripped = by_path["masks/obj_02.png"]
    del stripped["path"]  # as a tool that drops extra keys writes it: matched by its mask
    doc["annotations"].append({"id": 77, "image_id": 1, "category_id": names["green square"], "iscrowd": 0,
                               "segmentation": [[0, 0, 3, 0, 3, 3, 0, 3]], "area": 9, "bbox": [0, 0, 3, 3]})
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    assert run(own_job, "review", "--from", str(edited)) == 0
    text = capsys.readouterr()
    assert "annotation 77: it overlaps no mask" in text.err
    after = records_of(own_job)
    assert after["masks/obj_00.png"]["label"] == "green square" and after["masks/obj_00.png"]["decision"] == "correct"
    assert after["masks/obj_02.png"]["label_source"] == "review"


def test_metrics_and_report_measure_the_model_on_the_reviews(own_job, tmp_path, capsys):
    root, job_id, _ = own_job
    lines = tmp_path / "decisions.jsonl"
    before = records_of(own_job)
    wrong = next(n for n in ("red star", "blue circle") if n != before["objects/obj_00.png"]["top1"])
    lines.write_text("".join(json.dumps(x) + "\n" for x in (
        {"path": "objects/obj_00.png", "decision": "correct", "label": wrong},
        {"path": "objects/obj_01.png", "decision": "accept"},
        {"path": "masks/obj_01.png", "decision": "accept"},
        {"path": "masks/obj_02.png", "decision": "reject"})))
    assert run(own_job, "review", "--from", str(lines)) == 0
    review = json.loads((root / job_id / "metrics.json").read_text())["review"]
    assert review["reviewed"] == 4 and review["decisions"] == {"accept": 2, "correct": 1, "reject": 1}
    assert review["accuracy"] == 0.5 and review["by_kind"]["object"] == {"reviewed": 2, "accuracy": 0.5}
    assert review["precision_target"] == 0.95 and len(review["tradeoff"]) == 400
    report = (root / job_id / "report" / "report.md").read_text()
    assert "## Reviews" in report and "**Accuracy 50.0%**" in report
    assert (root / job_id / "report" / "review_tradeoff.png").is_file()


def test_reviews_survive_a_new_label_list_and_the_backfill_s_relabelling(own_job, tmp_path, toy_model, capsys):
    """A person's decisions outlive a relabelling with another bank: the job run again against a list that
    does not even name the corrected label keeps the correction as the label of record and the model's new top-1
    beside it; the acceptance of an item stays an acceptance (never flagged again) whatever the new scores."""
    root, job_id, db = own_job
    lines = tmp_path / "decisions.jsonl"
    lines.write_text(json.dumps({"path": "masks/obj_00.png", "decision": "correct", "label": "purple circle"}) + "\n"
                     + json.dumps({"path": "objects/obj_02.png", "decision": "accept"}) + "\n")
    assert run(own_job, "review", "--from", str(lines), "--reviewer", "ana") == 0
    capsys.readouterr()
    assert main(["job", job_id, "--results-root", str(root), "--model", toy_model, "--precision", "fp32",
                 "--db", str(db), "--labels", "cat,dog,bird"]) == 0  # a bank that names nothing drawn
    after = records_of(own_job)
    assert after["masks/obj_00.png"]["top1"] in {"cat", "dog", "bird"}
    assert after["masks/obj_00.png"]["label"] == "purple circle" and after["masks/obj_00.png"]["label_source"] == "review"
    accepted = after["objects/obj_02.png"]
    assert accepted["decision"] == "accept" and accepted["low_confidence"] is False  # never flagged again
    assert all(r["low_confidence"] for p, r in after.items() if p not in ("masks/obj_00.png", "objects/obj_02.png"))
    assert query(db, "SELECT label, label_source FROM labels WHERE path = 'masks/obj_00.png'") == [
        ("purple circle", "review")]


@pytest.mark.parametrize("size", [[2147483647, 2147483647], [100000, 100000], [-5, -5], [1e300, 1e300]])
def test_a_coco_mask_of_another_size_is_never_decoded(own_job, tmp_path, capsys, size):
    """A COCO annotation drawn on a picture of another size cannot be one of the job's masks: it is listed as
    not matched, at no cost, whatever size it claims (decoding it first allocated height x width bytes)."""
    pytest.importorskip("pycocotools")
    h, w = size
    doc = {"images": [{"id": 1, "height": h, "width": w, "file_name": "source.png"}],
           "categories": [{"id": 1, "name": "red circle"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                            "segmentation": {"size": [h, w], "counts": [4000000000]}},
                           {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 10, 0, 10, 10]]}]}
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(doc))
    assert run(own_job, "review", "--from", str(path)) == 0
    out = capsys.readouterr()
    assert "0 accepted, 0 corrected, 0 rejected" in out.out and "2 not matched" in out.out + out.err


def test_a_rejected_source_is_said_not_taken(own_job, tmp_path, capsys):
    """source.png never goes to quarantine: rejecting it is listed with that reason, not silently kept."""
    lines = tmp_path / "decisions.jsonl"
    lines.write_text(json.dumps({"path": "source.png", "decision": "reject"}) + "\n")
    assert run(own_job, "review", "--from", str(lines)) == 0
    out = capsys.readouterr()
    assert "never goes to quarantine" in out.out + out.err
    assert records_of(own_job)["source.png"]["decision"] is None


def test_after_reviews_the_summary_the_report_and_metrics_count_alike(own_job, tmp_path, toy_model, capsys):
    """A flagged item a person accepted is kept (its model rule no longer counted), a kept one rejected is flagged
    by review: the CLI's summary, the report's headline and ``metrics.json`` all say the counts of
    ``count_flags`` over ``labels.jsonl``."""
    from cliplabel_pipeline.core.job_folder import JobFolder
    from cliplabel_pipeline.core.labelling.filtered import count_flags

    root, job_id, db = own_job
    before = records_of(own_job)
    flagged = next(p for p, r in before.items() if r["low_confidence"] and r["flagged_by"])
    kept = next(p for p, r in before.items() if not r["low_confidence"] and p != "source.png")
    lines = tmp_path / "decisions.jsonl"
    lines.write_text(json.dumps({"path": flagged, "decision": "accept"}) + "\n"
                     + json.dumps({"path": kept, "decision": "reject"}) + "\n")
    assert run(own_job, "review", "--from", str(lines)) == 0
    capsys.readouterr()
    assert main(["job", job_id, "--results-root", str(root), "--model", toy_model, "--precision", "fp32",
                 "--db", str(db)]) == 0
    summary = capsys.readouterr().out.splitlines()[0]
    counts = count_flags(JobFolder.open(root, job_id).read_labels())
    assert counts.flagged_by["review"] == 1 and counts.flagged == sum(r["low_confidence"] for r in before.values())
    assert summary.startswith(f"{job_id}: {counts.items} labelled: {counts.words()}; ")
    assert f"{counts.items} items labelled: {counts.words()};" in (root / job_id / "report" / "report.md").read_text()
    scores = json.loads((root / job_id / "metrics.json").read_text())["scores"]
    assert (scores["kept"], scores["flagged"], scores["flagged_by"]) == (counts.kept, counts.flagged, counts.flagged_by)


def test_the_summary_counts_one_review_and_one_change_in_the_singular(own_job, tmp_path, capsys):
    root, job_id, _ = own_job
    lines = tmp_path / "decisions.jsonl"
    lines.write_text(json.dumps({"path": "objects/obj_00.png", "decision": "reject"}) + "\n")
    assert run(own_job, "review", "--from", str(lines), "--reviewer", "ana") == 0
    assert capsys.readouterr().out == (f"{job_id}: 1 review taken from cliplabel review lines: 0 accepted, 0 corrected, "
                                       f"1 rejected; 0 not matched; 1 label of record changed\n")
    assert run(own_job, "cleanup", "--apply") == 0
    assert capsys.readouterr().err.startswith("1 item moved to ")
    assert run(own_job, "restore") == 0
    assert capsys.readouterr().out == "restored 1 item\n"
    lines.write_text("".join(json.dumps({"path": p, "decision": "accept"}) + "\n"
                             for p in ("objects/obj_01.png", "masks/obj_01.png")))
    assert run(own_job, "review", "--from", str(lines)) == 0
    assert ": 2 reviews taken from " in capsys.readouterr().out


def test_a_dry_cleanup_says_each_item_goes_by_the_rule_that_flagged_it(own_job, tmp_path, capsys):
    """An item queued only because a person rejected it is said to go for that, not for scores it does not have."""
    lines = tmp_path / "decisions.jsonl"
    lines.write_text(json.dumps({"path": "objects/obj_00.png", "decision": "reject"}) + "\n")
    assert run(own_job, "review", "--from", str(lines)) == 0
    capsys.readouterr()
    assert run(own_job, "cleanup", "--min-confidence", "0", "--min-match", "0") == 0
    out, err = capsys.readouterr()
    assert out.split("\t")[0] == "objects/obj_00.png" and len(out.splitlines()) == 1
    assert err.startswith("dry run: 1 item would go: 1 rejected in review (add --apply); source.png never goes")
    assert run(own_job, "cleanup", "--min-confidence", "1", "--min-match", "0") == 0
    out, err = capsys.readouterr()
    n = len(out.splitlines())
    assert n > 2 and err.startswith(f"dry run: {n} items would go: {n} below confidence 1.0, 1 rejected in review "
                                    f"(1 by more than one of these) (add --apply)")
    assert run(own_job, "cleanup", "--apply", "--min-confidence", "0", "--min-match", "0") == 0
    capsys.readouterr()
    assert run(own_job, "cleanup", "--min-confidence", "0", "--min-match", "0") == 0
    assert capsys.readouterr().err.startswith(
        "dry run: no item would go (none below confidence 0.0 or match 0.0, none rejected in review) (add --apply)")
    for purge, verb in (([], "moved"), (["--purge"], "deleted")):  # nothing to undo: no restore offered
        assert run(own_job, "cleanup", "--apply", *purge, "--min-confidence", "0", "--min-match", "0") == 0
        assert capsys.readouterr().err == (
            f"0 items {verb}: none below confidence 0.0 or match 0.0, none rejected in review\n")
