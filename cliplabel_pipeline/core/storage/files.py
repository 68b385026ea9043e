"""The bytes of cliplabel's JSON and JSON Lines files, and reading JSON Lines back."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def json_bytes(data) -> bytes:
    """A JSON file's bytes as cliplabel writes them: indented by one, UTF-8 text kept as it is."""
    return json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8")


def jsonl_bytes(records: Iterable[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def read_jsonl(path: Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
