"""Windows' rules for a file name, defined once: the job ids cliplabel accepts, the ZIP entry names it makes
(``organising/zip_names``) and the item names it warns about all read them from here, so a results root can
move between Linux, macOS and Windows.

A name Windows cannot hold: one with a control character or ``\\ / : * ? " < > |``; one ending in a dot or a
space (Windows drops them, so two names meet); a device name (``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM1``-
``COM9``, ``LPT1``-``LPT9``, also with an extension: ``nul.txt``); one over 255 UTF-16 units. Two names that
differ only in case are one name there. A path over 260 characters needs Windows' long paths turned on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PureWindowsPath

RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", *(f"COM{i}" for i in "123456789¹²³"),
            *(f"LPT{i}" for i in "123456789¹²³")}
FORBIDDEN = re.compile(r'[\\/:*?"<>|\x00-\x1f]')
MAX_NAME_UNITS = 255  # UTF-16 code units in one name (NTFS)
MAX_PATH = 260  # without long paths turned on


def reserved_stem(name: str) -> bool:
    """True for a name Windows keeps for a device, whatever follows the first dot (``CON``, ``nul.txt``)."""
    return name.split(".")[0].rstrip(" ").upper() in RESERVED


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one file name on Windows, in words, or None when it can."""
    if m := FORBIDDEN.search(name):
        char = m.group()
        return (f"{char!r} is not allowed in a Windows name" if char.isprintable()
                else "a control character is not allowed in a Windows name")
    if name.endswith((".", " ")):
        return "Windows drops a name's trailing dots and spaces"
    if reserved_stem(name):
        return f"{name.split('.')[0].rstrip(' ')!r} is a device name on Windows"
    if len(name.encode("utf-16-le", "surrogatepass")) // 2 > MAX_NAME_UNITS:
        return f"longer than Windows' {MAX_NAME_UNITS} characters for a name"
    return None


def path_problem(rel: str) -> str | None:
    """Why the relative path ``rel`` (forward slashes) cannot exist on Windows, or None."""
    parts = rel.split("/")
    if PureWindowsPath(rel).drive or PureWindowsPath(rel).is_absolute():
        return "Windows reads it as a drive or an absolute path"
    for part in parts:
        if problem := name_problem(part):
            return f"{part!r}: {problem}"
    return None


def case_clashes(paths: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of paths that are one path on Windows (and macOS), which compare names without case."""
    seen: dict[str, str] = {}
    clashes = []
    for path in paths:
        key = path.casefold()
        if key in seen:
            clashes.append((seen[key], path))
        else:
            seen[key] = path
    return clashes
