"""A job's items (``source.png``, every file under ``masks/`` and ``objects/``), its input fingerprint,
and whether the segmentation service has finished writing it."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

from cliplabel_pipeline.core.job_folder import INPUT_DIRS, SOURCE_NAME, JobFolder
from cliplabel_pipeline.core.storage import windows_names
from cliplabel_pipeline.core.storage.guarded import is_link, shown
from cliplabel_pipeline.core.values import SkippedItem


@dataclass(frozen=True)
class Item:
    """One file of a job: ``path`` relative to the job folder (forward slashes), ``kind``, and its size and
    modification time when it was listed (the input fingerprint)."""

    path: str
    kind: str
    size: int = 0
    mtime_ns: int = 0


@dataclass
class JobItems:
    """A job's items to label, and the entries skipped before decoding."""

    job: JobFolder
    items: list[Item]
    skipped: list[SkippedItem]

    @property
    def source(self) -> Item | None:
        return next((i for i in self.items if i.kind == "source"), None)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".mpo")
MAX_DEPTH = 32  # folders under masks/ or objects/ deeper than this are skipped, said once each
MAX_FILE_BYTES = 1_000_000_000  # an image file larger than this is skipped unread (no image cliplabel decodes needs it)
# The longest item name whose ``labels/<name>.json`` still fits in a file name (255 bytes on most systems).
MAX_NAME_BYTES = 255 - len(".json")


def _problem(name: str, st: os.stat_result) -> str | None:
    """Why the entry ``name`` cannot be an item, or None when it is a regular file with a usable name."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    if len(encoded) > MAX_NAME_BYTES:
        return f"file name is {len(encoded)} bytes, over the {MAX_NAME_BYTES}-byte limit for its labels file"
    if is_link(st):  # a junction too, which lstat reports as a folder
        return "symbolic link (only regular files inside the job are read)"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO, not a regular file"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "a device, not a regular file"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket, not a regular file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size > MAX_FILE_BYTES:
        return f"file is {st.st_size / 1e9:,.1f} GB, over the {MAX_FILE_BYTES / 1e9:,.1f} GB limit for an image"
    return None


def _shown_path(rel: str) -> str:
    """``rel`` as JSON can hold it: undecodable bytes written as ``\\xNN`` escapes."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def list_job_items(job: JobFolder) -> JobItems:
    """``source.png`` plus every file under ``masks/`` and ``objects/`` (nested folders too, any extension).

    Nothing is followed: symbolic links, FIFOs, devices, sockets, hidden files, undecodable or overlong names
    and folders named like images are each skipped with a reason, so every entry is either an item or in
    ``skipped.jsonl``. The files are opened later without following links (``JobFolder.open_item``).
    """
    items: list[Item] = []
    skipped: list[SkippedItem] = []

    def consider(rel: str, kind: str, st: os.stat_result) -> None:
        name = rel.rsplit("/", 1)[-1]
        reason = "hidden file" if name.startswith(".") else _problem(name, st)
        if reason:
            skipped.append(SkippedItem(_shown_path(rel), kind, reason))
        else:
            items.append(Item(rel, kind, st.st_size, st.st_mtime_ns))

    def listing(rel: str, kind: str):
        try:
            return iter(sorted(os.scandir(job.path / rel), key=lambda e: e.name))
        except OSError as exc:
            skipped.append(SkippedItem(_shown_path(rel), kind, f"folder cannot be read: {exc.strerror or exc}"))
            return iter(())

    def walk(top: str, kind: str) -> None:
        """Every entry under ``top`` in name order, depth first, with a stack (a producer decides the depth)."""
        stack = [(top, listing(top, kind))]
        while stack:
            rel, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            sub = f"{rel}/{entry.name}"
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # removed while listing
            if is_link(st) or not stat.S_ISDIR(st.st_mode):
                consider(sub, kind, st)
                continue
            if entry.name.lower().endswith(IMAGE_SUFFIXES):
                skipped.append(SkippedItem(_shown_path(sub), kind, "a folder, not an image"))
            if entry.name.startswith("."):
                continue
            if len(stack) >= MAX_DEPTH:
                skipped.append(SkippedItem(_shown_path(sub), kind,
                                           f"folder nested more than {MAX_DEPTH} levels deep; not read"))
            else:
                stack.append((sub, listing(sub, kind)))

    source = _lstat(job.path / SOURCE_NAME)
    if source is not None:
        consider(SOURCE_NAME, "source", source)
    for folder, kind in INPUT_DIRS.items():
        st = _lstat(job.path / folder)
        if st is None:
            continue
        if stat.S_ISDIR(st.st_mode) and not is_link(st):
            walk(folder, kind)
        else:
            skipped.append(SkippedItem(folder, kind, _problem(folder, st) or "a file where a folder was expected"))
    return JobItems(job, items, skipped)


def windows_note(items: JobItems) -> str | None:
    """One line when item paths of the job could not exist on Windows (a forbidden character, a device name,
    two names that differ only in case, a path too long without long paths), or None. Such items are labelled
    all the same (the system that made them holds them); the line says the folder cannot move to Windows as is."""
    paths = [i.path for i in items.items]
    found = [f"{shown(p)!r}: {problem}" for p in paths if (problem := windows_names.path_problem(p))]
    found += [f"{shown(a)!r} and {shown(b)!r} are one name there" for a, b in windows_names.case_clashes(paths)]
    # its labels file under a short root (D:\r\); longer ones need Windows' long paths turned on
    found += [f"{shown(p)!r}: its labels file's path is over {windows_names.MAX_PATH} characters there"
              for p in paths if len(rf"D:\r\{items.job.id}\labels\{p}.json") > windows_names.MAX_PATH]
    if not found:
        return None
    return (f"job {items.job.id}: {len(found)} item path(s) could not exist on Windows ({found[0]}"
            f"{'; ...' if len(found) > 1 else ''}); labelled here, but this job folder cannot be copied to Windows as it is")


def _lstat(path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def input_fingerprint(items: JobItems) -> str:
    """Hash of the job's inputs (paths, sizes, modification times); the pipeline's own outputs never count."""
    digest = hashlib.sha256()
    for item in items.items:
        digest.update(f"{item.path}\0{item.size}\0{item.mtime_ns}\n".encode())
    for entry in items.skipped:
        digest.update(f"{entry.path}\0skipped\n".encode())
    return digest.hexdigest()[:16]


def job_readiness(job: JobFolder, settle_seconds: float, now: float, marker: str | None = None) -> tuple[bool, str]:
    """``(True, fingerprint)`` when the segmentation has finished writing the job, else ``(False, reason)``.

    Finished means ``source.png`` exists and either the completion ``marker`` file exists, or (without a
    marker) no input file changed in the last ``settle_seconds``.
    """
    if not job.is_file(job.source):
        return False, f"no {job.source.name} yet"
    items = list_job_items(job)
    if marker:
        if not (job.path / marker).exists():
            return False, f"no {marker} yet"
    else:
        newest = max((i.mtime_ns / 1e9 for i in items.items), default=0.0)
        folders = [_lstat(job.path / d) for d in INPUT_DIRS]
        newest = max([newest] + [st.st_mtime for st in folders if st is not None])
        if now - newest < settle_seconds:
            return False, f"changed {now - newest:.0f}s ago (settle interval {settle_seconds:.0f}s)"
    return True, input_fingerprint(items)
