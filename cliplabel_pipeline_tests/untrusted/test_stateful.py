"""Random sequences of what happens to a job: a person runs ``job``, ``cleanup --apply``, ``cleanup --purge``,
``restore`` and ``export`` (each with the results root in one of the forms a user types), the segmentation
service adds, replaces and removes items meanwhile, and a command may be killed at any change it makes to the
disk. After every step: no input byte is lost (each version the producer wrote is in the job or in quarantine,
unless a purge asked for it), labels.jsonl, DuckDB and the derived outputs agree (or the job says it is stale),
and ``restore`` succeeds whenever there is something to restore and room to put it back."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, \
    run_state_machine_as_test

from cliplabel_pipeline.toyworld.demo import TOY_MODEL_DIR
from cliplabel_pipeline.toyworld.jobs import write_toy_job
from cliplabel_pipeline_tests.untrusted.promises import (
    INPUTS, ROOT_FORMS, Ran, assert_agree, is_stale, job_inputs, label_lines, lost, quarantined,
    results_root_arg, run_in_process, run_killed, sha,
)

THRESHOLDS = ["0", "0.99", "0.9999", "0.99999", "1"]  # the toy items' confidences lie between 0.99 and 1
NAMES = ["obj_00.png", "obj_01.png", "obj_02.png", "extra.png", "deep/er/extra.png"]
CONTENTS = ["0", "1", "2", "3", "4", "not an image", "empty"]
kills = st.one_of(st.none(), st.integers(1, 40))  # the n-th change to the disk that a command makes


@functools.lru_cache(maxsize=1)
def pool() -> dict[str, bytes]:
    """A toy job's files as bytes: ``source.png``, ``masks/obj_0N.png``, ``objects/obj_0N.png`` (N < 5)."""
    with tempfile.TemporaryDirectory() as tmp:
        job = write_toy_job(Path(tmp), "pool", seed=5, n_objects=5)
        return {p.relative_to(job).as_posix(): p.read_bytes() for p in job.rglob("*.png")}


def content(kind: str, name: str) -> bytes:
    if name == "not an image":
        return b"this is not an image\n"
    if name == "empty":
        return b""
    return pool()[f"{kind}/obj_0{name}.png"]


def one_line_error(ran: Ran, *expected: str) -> None:
    """The command failed with one error line (after any log lines), saying one of ``expected``."""
    lines = ran.err.strip().splitlines()
    assert ran.rc == 2 and "Traceback" not in ran.err and lines and lines[-1].startswith("cliplabel: error:"), ran.err
    assert all(line.startswith(("WARNING ", "INFO ")) for line in lines[:-1]), ran.err
    assert any(e in lines[-1] for e in expected), f"unexpected error: {lines[-1]}"


class JobMachine(RuleBasedStateMachine):
    """One job, one DuckDB file, one results root form per example; commands run in this process (fast),
    a kill injected at the n-th change to the disk."""

    def __init__(self):
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="cliplabel-stateful-"))
        self.job = self.base / "results" / "job"
        for rel, data in pool().items():
            if rel == "source.png" or rel.split("/")[1] < "obj_03":
                (self.job / rel).parent.mkdir(parents=True, exist_ok=True)
                (self.job / rel).write_bytes(data)
        self.db = self.base / "lineage.duckdb"
        self.live = job_inputs(self.job)  # every version that must still exist, in the job or in quarantine
        self.unsettled: set[str] = set()  # "job" or "action" killed and not yet completed by a later command
        self.old_cwd = os.getcwd()
        self.cwd, self.root = self.base, str(self.base / "results")

    @initialize(form=st.sampled_from(ROOT_FORMS))
    def results_root_form(self, form):
        self.cwd, self.root = results_root_arg(self.base, form)
        os.chdir(self.cwd)

    def teardown(self):
        os.chdir(self.old_cwd)
        shutil.rmtree(self.base, ignore_errors=True)

    # --- commands -------------------------------------------------------------------------------------------
    def args(self, command: str, *extra: str) -> list[str]:
        args = [command, "job", "--results-root", self.root, *extra]
        if command == "job":
            args += ["--model", str(TOY_MODEL_DIR), "--precision", "fp32"]
        if command != "export":
            args += ["--db", str(self.db)]
        return args

    def cli(self, command: str, *extra: str, kill: int | None = None) -> Ran:
        return run_in_process(self.args(command, *extra), kill)

    def settle(self, command: str, ran: Ran) -> None:
        """Record a kill, or check the command ended as a user expects and what it completed."""
        if ran.rc is None:
            self.unsettled.add("job" if command == "job" else "action")
            return
        assert "Traceback" not in ran.err, ran.err
        if ran.rc == 0 and command == "job":
            self.unsettled.clear()
        elif ran.rc == 0 and command in ("cleanup", "restore"):
            self.unsettled.discard("action")  # any cleanup or restore first completes an interrupted one

    def labelled(self) -> bool:
        return (self.job / "labels.jsonl").is_file()

    @rule(kill=kills)
    def label(self, kill):
        ran = self.cli("job", kill=kill)
        self.settle("job", ran)
        assert ran.rc in (None, 0), ran.err

    @rule(threshold=st.sampled_from(THRESHOLDS), kill=kills)
    def cleanup(self, threshold, kill):
        had_labels = self.labelled()
        ran = self.cli("cleanup", "--min-confidence", threshold, "--apply", kill=kill)
        self.settle("cleanup", ran)
        if ran.rc is not None and not had_labels:
            assert ran.rc == 2
            one_line_error(ran, "has no labels.jsonl yet")
        elif ran.rc is not None:
            assert ran.rc == 0, ran.err

    @rule(threshold=st.sampled_from(THRESHOLDS), kill=kills)
    def purge(self, threshold, kill):
        plan = self.cli("cleanup", "--min-confidence", threshold)  # the dry run says what the purge deletes
        self.settle("cleanup", plan)
        if plan.rc != 0:
            one_line_error(plan, "has no labels.jsonl yet")
            return
        for line in plan.out.splitlines():
            rel = line.split("\t")[0]
            if (self.job / rel).is_file():  # the user asked for this version to go for good
                self.live -= Counter({(rel, sha((self.job / rel).read_bytes())): 1})
        ran = self.cli("cleanup", "--min-confidence", threshold, "--apply", "--purge", kill=kill)
        self.settle("cleanup", ran)
        assert ran.rc in (None, 0), ran.err

    @rule(kill=kills)
    def restore(self, kill):
        held = quarantined(self.job)
        taken = [rel for rel, _ in held if (self.job / rel).exists() or (self.job / rel).is_symlink()]
        ran = self.cli("restore", kill=kill)
        self.settle("restore", ran)
        if ran.rc is None or ran.rc == 0:
            return
        # the only refusals: nothing there, or an item's place taken by a newer version (which keeps both)
        assert ran.rc == 2, ran.err
        if "nothing in quarantine" in ran.err:
            assert not held, f"restore says nothing is in quarantine, but it holds {sorted(held)}"
        else:
            one_line_error(ran, "exists again in the job")
            assert taken, ran.err

    @rule(fmt=st.sampled_from(["zip", "csv", "jsonl"]))
    def export(self, fmt):
        ran = self.cli("export", "--format", fmt)
        self.settle("export", ran)
        if not self.labelled():
            one_line_error(ran, "has no labels.jsonl yet")
        elif fmt == "zip" and is_stale(self.job):
            one_line_error(ran, "run `cliplabel job job`")
        else:
            assert ran.rc == 0, ran.err
            written = Path(ran.out.strip())
            assert written.is_absolute() or (self.cwd / written).is_file()
            if not self.unsettled:
                assert exported_paths(self.cwd / written, fmt) == set(label_lines(self.job))

    # --- the producer ---------------------------------------------------------------------------------------
    @rule(kind=st.sampled_from(INPUTS), name=st.sampled_from(NAMES), what=st.sampled_from(CONTENTS))
    def producer_writes(self, kind, name, what):
        path, rel, data = self.job / kind / name, f"{kind}/{name}", content(kind, what)
        if path.is_file():  # the producer overwrites its own earlier version: that one is gone on purpose
            self.live -= Counter({(rel, sha(path.read_bytes())): 1})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.live[(rel, sha(data))] += 1

    @precondition(lambda self: any(rel != "source.png" for rel, _ in job_inputs(self.job)))
    @rule(data=st.data())
    def producer_removes(self, data):
        items = sorted(rel for rel, _ in job_inputs(self.job) if rel != "source.png")
        rel = data.draw(st.sampled_from(items), label="removed")
        self.live -= Counter({(rel, sha((self.job / rel).read_bytes())): 1})
        (self.job / rel).unlink()

    # --- after every step -----------------------------------------------------------------------------------
    @invariant()
    def no_input_byte_lost(self):
        missing = lost(self.job, self.live)
        assert not missing, f"input versions in neither the job nor its quarantine: {sorted(missing)}"

    @invariant()
    def labels_duckdb_and_outputs_agree(self):
        if not self.unsettled:
            assert_agree(self.job, self.db)


def exported_paths(path: Path, fmt: str) -> set[str]:
    import csv
    import io
    import json
    import zipfile

    if fmt == "zip":
        with zipfile.ZipFile(path) as zf:
            return {json.loads(x)["path"] for x in zf.read("labels.jsonl").decode().splitlines() if x}
    if fmt == "csv":
        return {r["path"] for r in csv.DictReader(io.StringIO(path.read_text()))}
    return {json.loads(x)["path"] for x in path.read_text().splitlines() if x}


def test_any_sequence_of_commands_loses_no_input_and_keeps_outputs_agreeing():
    run_state_machine_as_test(JobMachine)


class KilledJobMachine(JobMachine):
    """The same, with a real SIGKILL: a command in its own process killed a random moment after it takes the
    job's lock; the next command must complete what it left."""

    def producer_removes(self):
        """Not a rule here: which items it can choose from depends on where a real kill landed, so its draws
        would differ between runs of one example and Hypothesis would stop on inconsistent data, not on a
        bug. Every draw of this machine is the same whatever the timing; the producer still writes."""

    @rule(command=st.sampled_from(["job", "cleanup", "purge", "restore"]), delay=st.floats(0, 3),
          threshold=st.sampled_from(THRESHOLDS))
    def killed(self, command, delay, threshold):
        extra = {"cleanup": ["--min-confidence", threshold, "--apply"],
                 "purge": ["--min-confidence", threshold, "--apply", "--purge"]}.get(command, [])
        if command == "purge":
            plan = self.cli("cleanup", "--min-confidence", threshold)
            self.settle("cleanup", plan)
            for line in plan.out.splitlines() if plan.rc == 0 else []:
                rel = line.split("\t")[0]
                if (self.job / rel).is_file():
                    self.live -= Counter({(rel, sha((self.job / rel).read_bytes())): 1})
        name = "cleanup" if command == "purge" else command
        ran = run_killed(self.args(name, *extra), self.job, delay, self.cwd)
        self.settle(name, ran)
        assert ran.rc in (None, 0, 2), ran.err
        assert "Traceback" not in ran.err, ran.err


@pytest.mark.slow
def test_commands_killed_with_sigkill_at_random_moments_lose_nothing():
    from hypothesis import settings

    current = settings()
    run_state_machine_as_test(KilledJobMachine, settings=settings(
        current, max_examples=max(2, current.max_examples // 5), stateful_step_count=current.stateful_step_count))


# --- what the search found, kept as plain tests --------------------------------------------------------------
@pytest.mark.parametrize("purge", [True, False], ids=["purge", "quarantine"])
def test_an_interrupted_cleanup_completed_later_spares_a_version_written_since(purge, results_root, toy_model,
                                                                              tmp_path):
    """Found by the stateful test: cleanup killed after its journal, before its first file; the producer then
    writes a new version of a planned item; the next command completes the cleanup. The new version was never
    planned: it must not be deleted (purge) nor become a quarantined file whose sha256 the journal disowns, so
    that restore fails for ever (quarantine)."""
    from cliplabel_pipeline_tests.untrusted.promises import touches_an_item

    job = write_toy_job(results_root, "job", seed=5, n_objects=3)
    common = ["--results-root", str(results_root), "--db", str(tmp_path / "lineage.duckdb")]
    assert run_in_process(["job", "job", *common, "--model", toy_model, "--precision", "fp32"]).rc == 0
    cleanup = ["cleanup", "job", *common, "--min-confidence", "1", "--apply", *(["--purge"] if purge else [])]
    assert run_in_process(cleanup, when=touches_an_item).rc is None  # killed before any item went
    newer = pool()["masks/obj_04.png"]
    (job / "masks" / "obj_00.png").write_bytes(newer)  # the producer writes a new version of a planned item
    # what must survive: the newer version, and (quarantine) every planned item, in the job or quarantine
    live = Counter({("masks/obj_00.png", sha(newer)): 1}) if purge else job_inputs(job) + quarantined(job)
    restored = run_in_process(["restore", "job", *common])  # completes the cleanup first
    assert "Traceback" not in restored.err
    assert not lost(job, live), f"lost: {sorted(lost(job, live))}"
    assert restored.rc == 0 or "nothing in quarantine" in restored.err, restored.err
    if not purge:
        again = run_in_process(["restore", "job", *common])
        assert again.rc == 0 or "nothing in quarantine" in again.err, again.err
        assert (job / "masks" / "obj_00.png").read_bytes() == newer
    assert_agree(job, tmp_path / "lineage.duckdb")


def test_an_item_moved_before_the_kill_keeps_its_journal_entry_when_a_newer_version_appears(results_root, toy_model,
                                                                                           tmp_path):
    """Found by the SIGKILL search: cleanup killed after its first item went to quarantine; the producer writes
    that item again; the next command completes the cleanup. The quarantined version must stay recorded
    (restore says its place is taken, never that quarantine is empty), and the newer version stays."""
    from cliplabel_pipeline_tests.untrusted.promises import touches_an_item

    job = write_toy_job(results_root, "job", seed=5, n_objects=3)
    common = ["--results-root", str(results_root), "--db", str(tmp_path / "lineage.duckdb")]
    assert run_in_process(["job", "job", *common, "--model", toy_model, "--precision", "fp32"]).rc == 0
    moves = []

    def second_item_move(name, args):
        if touches_an_item(name, args):
            moves.append(args[0])
        return len(moves) >= 2

    cleanup = ["cleanup", "job", *common, "--min-confidence", "1", "--apply"]
    assert run_in_process(cleanup, when=second_item_move).rc is None  # killed after one item went
    [(moved, older)] = list(quarantined(job))
    newer = pool()["masks/obj_04.png"]
    (job / moved).write_bytes(newer)  # the producer writes that item again
    live = job_inputs(job) + quarantined(job)
    restored = run_in_process(["restore", "job", *common])  # completes the cleanup, then restores what it can
    assert "Traceback" not in restored.err and "nothing in quarantine" not in restored.err, restored.err
    assert not lost(job, live) and (job / moved).read_bytes() == newer
    assert_agree(job, tmp_path / "lineage.duckdb")
    (job / moved).unlink()  # the user moves the newer version away, as restore said: the older one comes back
    assert run_in_process(["restore", "job", *common]).rc == 0
    assert sha((job / moved).read_bytes()) == older, "the older version lost its record in quarantine"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_kept_in_the_job_follows_a_cleanup_or_says_it_is_stale(fmt, results_root, toy_model, tmp_path):
    """``export --format csv|jsonl`` writes ``export/<job>.<fmt>`` inside the job, beside the ZIP that every
    cleanup and restore rebuilds: it must list what labels.jsonl lists afterwards too, or the job be stale."""
    job = write_toy_job(results_root, "job", seed=5, n_objects=3)
    common = ["--results-root", str(results_root)]
    db = ["--db", str(tmp_path / "lineage.duckdb")]
    assert run_in_process(["job", "job", *common, *db, "--model", toy_model, "--precision", "fp32"]).rc == 0
    written = Path(run_in_process(["export", "job", *common, "--format", fmt]).out.strip())
    assert written == job / "export" / f"job.{fmt}"
    for step in (["cleanup", "job", *common, *db, "--min-confidence", "1", "--apply"], ["restore", "job", *common, *db]):
        assert run_in_process(step).rc == 0
        if not is_stale(job):
            assert exported_paths(written, fmt) == set(label_lines(job)), f"export/job.{fmt} after {step[0]}"
