"""Archive entry names that extract safely and the same everywhere.

An item's path comes from an untrusted job folder. As one ZIP entry name it must not carry a separator
(``/`` or ``\\``, which some extractors split on), ``..``, control or bidirectional-override characters, a name
Windows reserves (``CON``, ``NUL``, ``COM1``, ...) or characters Windows refuses; and two items must never
collapse onto one name (checked case-insensitively, as Windows and macOS compare names).
"""

from __future__ import annotations

import unicodedata

from cliplabel_pipeline.core.storage.windows_names import FORBIDDEN, reserved_stem

MAX_NAME_BYTES = 200


def portable_name(name: str) -> str:
    """``name`` as one portable file name: forbidden, control and format characters become ``_``."""
    if len(name) > 4 * MAX_NAME_BYTES:  # what can never fit goes before the per-character passes
        body, ext = _short_extension(name)
        name = body[:4 * MAX_NAME_BYTES] + ext
    name = unicodedata.normalize("NFC", name.encode("utf-8", "backslashreplace").decode("utf-8"))
    name = "".join("_" if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") else c for c in name)
    name = FORBIDDEN.sub("_", name).strip(" .")
    if reserved_stem(name):
        name = "_" + name
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:  # cut once, by bytes: a 30 MB label costs one pass, not millions
        body, ext = _short_extension(name)
        name = body.encode("utf-8")[:MAX_NAME_BYTES - len(ext.encode("utf-8"))].decode("utf-8", "ignore") + ext
    return name or "_"


def _short_extension(name: str) -> tuple[str, str]:
    """``name`` as (what may be cut, the extension kept whole): ``.png`` stays, a "suffix" of 10 or more
    characters, or a name that is all extension, is cut like the rest."""
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if stem and len(ext) < 10 else (name, "")


def flat_item_name(path: str) -> str:
    """An item path (``masks/sub/a.png``) as one portable name (``masks__sub__a.png``)."""
    return portable_name("__".join(part for part in path.split("/") if part))


class UniqueNames:
    """Hands out names unique within one folder of an archive: a clash gets `` (2)``, `` (3)``..."""

    def __init__(self):
        self._taken: set[str] = set()

    def take(self, folder: str, name: str) -> str:
        stem, dot, ext = name.rpartition(".") if "." in name.strip(".") else (name, "", "")
        candidate, n = name, 1
        while f"{folder}/{candidate}".casefold() in self._taken:
            n += 1
            candidate = f"{stem} ({n}){dot}{ext}"
        self._taken.add(f"{folder}/{candidate}".casefold())
        return candidate
