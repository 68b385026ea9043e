"""Removing what the model could not name: dry run, quarantine inside the job, restore, or purge.

Each cleanup is an *action* with its own journal, ``quarantine/journal/<action>.json``, written before any
file or row changes: what goes, each file's sha256, its exact line and position in ``labels.jsonl`` and its
DuckDB rows. Files move (a rename: bytes untouched) to ``quarantine/<action>/<path>``, so two cleanups of
the same path never share a name. A process killed at any point leaves a journal that the next cleanup or
restore completes (``recover``). ``restore`` undoes every action, newest first, putting each file back and
each line back at its position, so ``labels.jsonl`` is byte-identical to before the cleanup.

The journal lies in a folder the job's producer can write, so it is never trusted: every entry is checked
(a plain path under ``masks/`` or ``objects/``; its stored file inside this action's folder with the recorded
sha256; its label line for that path; its rows forced to this job and path) and one that fails is refused.
``source.png`` is never removed (masks are read through it). Nothing here follows a symbolic link.
"""

from __future__ import annotations

import json
import logging
import secrets
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import INPUT_DIRS, JobFolder
from cliplabel_pipeline.core.labelling.filtered import FilteredSets, FlaggedItem, split_by_confidence
from cliplabel_pipeline.core.storage import guarded
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.core.storage.database import write_connection
from cliplabel_pipeline.core.storage.hashing import MAX_HASHED_BYTES, stream_sha256
from cliplabel_pipeline.core.storage.item_rows import ITEM_TABLES, delete_item_rows, item_rows, insert_item_rows
from cliplabel_pipeline.core.values import LabelRecord
from cliplabel_pipeline.core.words import counted

log = logging.getLogger(__name__)
PLANNED, APPLIED, RESTORING = "planned", "applied", "restoring"


class NothingToRestore(CliplabelError):
    """``restore`` of a job with nothing in quarantine."""


@dataclass
class Entry:
    path: str
    sha256: str
    position: int
    line: str
    rows: dict[str, list[dict]] = field(default_factory=dict)


@dataclass
class Action:
    id: str
    state: str
    purge: bool
    entries: list[Entry]

    def stored(self, job: JobFolder, entry: Entry) -> str:
        return job.rel(job.quarantined(self.id, entry.path))

    def to_json(self) -> dict:
        return {"id": self.id, "state": self.state, "purge": self.purge, "entries": [e.__dict__ for e in self.entries]}


def removable(rec: LabelRecord) -> bool:
    """Whether cleanup may move ``rec``'s file: a mask or a cut-out, by where it lies (``labels.jsonl`` is a
    file of the job folder and may be edited: its ``kind`` never decides, so no input or output of the job
    outside ``masks/`` and ``objects/`` can be quarantined or purged)."""
    return rec.kind != "source" and "/" in rec.path and rec.path.split("/")[0] in INPUT_DIRS


def plan_cleanup(job: JobFolder, min_confidence: float, min_match: float | None = None) -> list[LabelRecord]:
    """Label records of the items below ``min_confidence``, or with a ``match`` below ``min_match``, that cleanup
    would remove (only masks and cut-outs): an item a person accepted or corrected never, one a person rejected
    always."""
    return [f.record for f in cleanup_candidates(job, min_confidence, min_match)]


def cleanup_candidates(job: JobFolder, min_confidence: float, min_match: float | None = None) -> list[FlaggedItem]:
    """What ``plan_cleanup`` plans, each item with the rules that put it there (see ``plan_words``)."""
    filtered = split_by_confidence(job.read_labels(), min_confidence, min_match)
    going = {r.path for r in quarantine_plan(job, filtered)}
    return [f for f in filtered.flagged if f.path in going]


def nothing_words(min_confidence: float, min_match: float | None) -> str:
    """Why a cleanup has nothing to take: "none below confidence 0.25 or match 0.5, none rejected in review"."""
    below = f"below confidence {min_confidence}" + (f" or match {min_match}" if min_match is not None else "")
    return f"none {below}, none rejected in review"


def plan_words(plan: list[FlaggedItem], min_confidence: float, min_match: float | None) -> str:
    """What a cleanup would remove, by the rules that put each item there: "2 items would go: 1 below confidence
    0.25, 1 rejected in review"; an item put there by several rules counts under each, and the words say so."""
    rules = {"confidence": f"below confidence {min_confidence}", "match": f"below match {min_match}",
             "review": "rejected in review"}
    if not plan:
        return f"no item would go ({nothing_words(min_confidence, min_match)})"
    parts = [f"{n} {words}" for rule, words in rules.items() if (n := sum(rule in f.rules for f in plan))]
    several = sum(len(f.rules) > 1 for f in plan)
    return (f"{counted(len(plan), 'item')} would go: {', '.join(parts)}"
            + (f" ({several} by more than one of these)" if several else ""))


def quarantine_plan(job: JobFolder, filtered: FilteredSets) -> list[LabelRecord]:
    """The flagged items of ``filtered`` that cleanup may remove: masks and cut-outs still in the job."""
    return [r for r in filtered.flagged_records if removable(r) and job.is_file(r.path)]


def apply_cleanup(job: JobFolder, records: list[LabelRecord], db_path: Path | None, purge: bool = False) -> list[str]:
    """Quarantine (or with ``purge`` delete) the items of ``records``, with their label lines and DuckDB rows.

    The job is locked (another cleanup, restore or labelling of it waits), and an item goes only while its line
    in ``labels.jsonl`` is still the record that was planned: a plan made before another process changed the
    job moves nothing that process already moved or relabelled. The database is opened first (a busy one is
    waited for), then the journal is written, then files move, ``labels.jsonl`` is rewritten and the rows are
    deleted; the journal is marked applied last."""
    with job.lock():
        recover(job, db_path)
        lines = _label_lines(job)
        position = {_line_path(line): i for i, line in enumerate(lines)}
        entries, seen = [], set()
        for rec in records:
            at = position.get(rec.path)
            if at is None or rec.path in seen or not removable(rec) or LabelRecord.from_json(json.loads(lines[at])) != rec:
                continue
            with job.open_item(rec.path) as fh:
                digest = stream_sha256(fh, MAX_HASHED_BYTES)
            if digest is None:
                log.warning("job %s: %s is over %d bytes; left where it is", job.id, shown(rec.path), MAX_HASHED_BYTES)
                continue
            seen.add(rec.path)
            entries.append(Entry(rec.path, digest, at, lines[at]))
        if not entries:
            return []
        action = Action(_new_action_id(), PLANNED, purge, entries)
        with _database(job, db_path) as con:
            if con is not None:
                rows = item_rows(con, job.id, [e.path for e in entries])
                for entry in entries:
                    entry.rows = rows[entry.path]  # by path: never by position
            _write_journal(job, action)
            _complete_cleanup(job, action, con)
        _finish_cleanup(job, action)  # only once the rows are committed
        return [e.path for e in action.entries]


def restore(job: JobFolder, db_path: Path | None) -> list[str]:
    """Undo the job's quarantines, newest first: files, label lines (at their places) and DuckDB rows.

    An older quarantined version of an item that a newer action also holds stays in quarantine (its record
    kept), as does anything behind it; nothing is ever overwritten. The job is locked meanwhile."""
    with job.lock():
        return _restore(job, db_path)


def _restore(job: JobFolder, db_path: Path | None) -> list[str]:
    found = recover(job, db_path)
    finished = [e.path for a in found if a.state == RESTORING for e in a.entries]
    actions = sorted((a for a in _journals(job) if a.state == APPLIED and not a.purge), key=lambda a: a.id,
                     reverse=True)
    if not actions:
        if finished:  # an interrupted restore, now complete
            return finished
        raise NothingToRestore(f"job {job.id!r} has nothing in quarantine")
    chosen, claimed = [], set()
    for action in actions:  # checked before anything changes
        paths = {e.path for e in action.entries}
        occupied = [e.path for e in action.entries if _occupied(job, e.path)]
        if paths & claimed or occupied:
            if not chosen:
                raise CliplabelError(f"cannot restore: {shown(occupied[0])} exists again in the job; move it away "
                                     f"first")
            log.warning("job %s: %d older quarantined items stay in quarantine (a newer version was restored)",
                        job.id, sum(len(a.entries) for a in actions[len(chosen):]))
            break
        for e in action.entries:
            with job.open_item(action.stored(job, e)) as fh:
                if stream_sha256(fh) != e.sha256:
                    raise CliplabelError(f"quarantined {shown(e.path)} changed since cleanup (sha256 differs); "
                                         f"nothing restored")
        chosen.append(action)
        claimed |= paths
    restored, outcomes = finished, []
    with _database(job, db_path) as con:
        for action in chosen:
            action.state = RESTORING
            _write_journal(job, action)
            outcomes.append((action, _complete_restore(job, action, con)))
    for action, (back, kept) in outcomes:  # only once the rows are committed
        _finish_restore(job, action, kept)
        restored += [e.path for e in back]
    return restored


def _occupied(job: JobFolder, path: str) -> bool:
    return job.is_file(path) or (job.path / path).is_symlink() or (job.path / path).exists()


def pending(job: JobFolder) -> bool:
    """Whether a cleanup or restore of the job was interrupted (its journal planned or restoring)."""
    return any(a.state in (PLANNED, RESTORING) for a in _journals(job))


def recover(job: JobFolder, db_path: Path | None) -> list[Action]:
    """Complete what a killed cleanup or restore left half done; returns those actions, as they were found."""
    with job.lock():
        return _recover(job, db_path)


def _recover(job: JobFolder, db_path: Path | None) -> list[Action]:
    job.sweep_temps()
    pending = [a for a in _journals(job) if a.state in (PLANNED, RESTORING)]
    found = [Action(a.id, a.state, a.purge, list(a.entries)) for a in pending]
    if not pending:
        return []
    kept = {}
    with _database(job, db_path) as con:
        for action in pending:
            log.warning("completing an interrupted %s of job %s (action %s)",
                        "cleanup" if action.state == PLANNED else "restore", job.id, action.id)
            if action.state == PLANNED:
                _complete_cleanup(job, action, con)
            else:
                kept[action.id] = _complete_restore(job, action, con)[1]
    for action in pending:  # only once the rows are committed
        if action.id in kept:
            _finish_restore(job, action, kept[action.id])
        else:
            _finish_cleanup(job, action)
    return found


def _complete_cleanup(job: JobFolder, action: Action, con) -> None:
    """Every step is idempotent, so it completes an action that was interrupted anywhere. An item whose file is
    no longer the one planned (the producer wrote it again since) stays where it is, with its line and rows: the
    action drops it, so a new version is never deleted nor quarantined under the old one's sha256."""
    spared = []
    for e in action.entries:
        if not action.purge and job.is_file(action.stored(job, e)):
            continue  # already moved: a file at its place now is a newer version, and restore will say so
        if not job.is_file(e.path):
            continue  # already moved (or deleted by the purge)
        with job.open_item(e.path) as fh:
            if stream_sha256(fh, MAX_HASHED_BYTES) != e.sha256:
                log.warning("job %s: %s changed since the cleanup was planned; left in place", job.id, shown(e.path))
                spared.append(e)
                continue
        if action.purge:
            job.remove(e.path)
        else:
            guarded.move(job.path, e.path, action.stored(job, e))
    if spared:
        action.entries = [e for e in action.entries if e not in spared]
        _write_journal(job, action)
    gone = {e.path for e in action.entries}
    _write_lines(job, [line for line in _label_lines(job) if _line_path(line) not in gone])
    if con is not None:
        delete_item_rows(con, job.id, sorted(gone))


def _finish_cleanup(job: JobFolder, action: Action) -> None:
    """Mark the action applied, listing only what its folder holds: an entry whose file is not there (moved by
    nobody, or gone before the move) is dropped, and a journal left with nothing is removed, never applied."""
    if not action.purge:
        action.entries = [e for e in action.entries if job.is_file(action.stored(job, e))]
        if not action.entries:
            job.remove(job.journal_file(action.id))
            _prune_quarantine(job, action)
            return
    action.state = APPLIED
    _write_journal(job, action)
    if action.purge:  # nothing to restore: the journal has done its work
        job.remove(job.journal_file(action.id))
        _prune_quarantine(job, action)


def _complete_restore(job: JobFolder, action: Action, con) -> tuple[list[Entry], list[Entry]]:
    """Put the action's files, lines and rows back; an entry whose place is taken stays quarantined, recorded."""
    back, kept = [], []
    for e in action.entries:
        if job.is_file(action.stored(job, e)) and not _occupied(job, e.path):
            guarded.move(job.path, action.stored(job, e), e.path)
        (back if job.is_file(e.path) and not job.is_file(action.stored(job, e)) else kept).append(e)
    lines = _label_lines(job)
    present = {_line_path(line) for line in lines}
    for e in sorted(back, key=lambda e: e.position):
        if e.path not in present:
            lines.insert(min(e.position, len(lines)), e.line)
    _write_lines(job, lines)
    if con is not None:
        insert_item_rows(con, job.id, {e.path: e.rows for e in back if e.rows})
    return back, kept


def _finish_restore(job: JobFolder, action: Action, kept: list[Entry]) -> None:
    if kept:
        log.warning("job %s: %d quarantined items stay in quarantine: their place in the job is taken",
                    job.id, len(kept))
        _write_journal(job, Action(action.id, APPLIED, action.purge, kept))
    else:
        job.remove(job.journal_file(action.id))
        _prune_quarantine(job, action)


def _prune_quarantine(job: JobFolder, action: Action) -> None:
    for folder in (job.quarantine_dir / action.id, job.journal_dir, job.quarantine_dir):
        guarded.remove_empty_folders(job.path, job.rel(folder))


# the journal
def _new_action_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f") + "-" + secrets.token_hex(3)


def _write_journal(job: JobFolder, action: Action) -> None:
    job.write_json(job.journal_file(action.id), action.to_json())


def _journals(job: JobFolder) -> list[Action]:
    """The job's actions, oldest first; an entry or a journal that fails its checks is left out, said once."""
    actions = []
    for name in job.files_under(job.journal_dir):
        try:
            actions.append(_checked_action(job, name, json.loads(job.read_bytes(job.journal_dir / name))))
        except (ValueError, KeyError, TypeError, RecursionError, CliplabelError) as exc:
            log.warning("ignoring quarantine journal %s: %s", shown(name), exc)
    return sorted(actions, key=lambda a: a.id)


def _checked_action(job: JobFolder, name: str, doc: dict) -> Action:
    action_id = str(doc["id"])
    if name != f"{action_id}.json" or "/" in action_id or action_id.startswith("."):
        raise ValueError("its id does not match its file name")
    if doc["state"] not in (PLANNED, APPLIED, RESTORING):
        raise ValueError(f"unknown state {doc['state']!r}")
    entries = []
    for raw in doc["entries"]:
        entry = Entry(str(raw["path"]), str(raw["sha256"]), int(raw["position"]), str(raw["line"]),
                      {t: list(raw.get("rows", {}).get(t, [])) for t in ITEM_TABLES})
        guarded.parts_of(entry.path)
        if entry.path.split("/")[0] not in INPUT_DIRS or _line_path(entry.line) != entry.path or "\n" in entry.line:
            raise ValueError(f"entry {shown(entry.path)!r} is not an item of this job with its own label line")
        for rows in entry.rows.values():
            for row in rows:
                row.update(job_id=job.id, path=entry.path)  # this job's rows for this item, nothing else
        entries.append(entry)
    return Action(action_id, doc["state"], bool(doc["purge"]), entries)


# labels.jsonl as lines, so that what is put back is byte for byte what was taken
def _label_lines(job: JobFolder) -> list[str]:
    """The lines of ``labels.jsonl``; one line for a file that lists an item twice (see ``read_labels``)."""
    if not job.has_labels():
        return []
    job.read_labels()  # every line a record with a plain path, none twice: else one line, and nothing changes
    return [line for line in job.read_bytes(job.labels_jsonl).decode("utf-8").split("\n") if line.strip()]


def _write_lines(job: JobFolder, lines: list[str]) -> None:
    job.write(job.labels_jsonl, "".join(line + "\n" for line in lines).encode("utf-8"))


def _line_path(line: str) -> str:
    return json.loads(line)["path"]


def _database(job: JobFolder, db_path: Path | None):
    return write_connection(db_path, job.waits.db_s) if db_path else nullcontext()
