"""Rebuild ``concepts.txt`` and ``synonyms.tsv`` from the three source lists.

    python concept_bank/build_concept_bank.py WORDNET_DICT_DIR

WORDNET_DICT_DIR is a Princeton WordNet 3.0 ``dict/`` folder (``data.noun`` or ``data.noun1``+``data.noun2``,
and ``index.sense``). See SOURCES.md for where each list comes from.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
# WordNet lexicographer files of concrete, photographable things.
CONCRETE_LEXFILES = {"05": "animal", "06": "artifact", "13": "food", "17": "object", "20": "plant"}
MIN_TAG_COUNT = 1  # sense seen at least once in the SemCor-tagged corpus: a common sense
MAX_WORDS = 3


def normalise(name: str) -> str:
    return re.sub(r"\s+", " ", name.replace("_", " ").strip().lower())


def read_list(path: Path) -> list[str]:
    return [normalise(line) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def wordnet_synsets(dict_dir: Path) -> list[list[str]]:
    """Lemma lists of common concrete noun synsets, most frequent first."""
    counts: dict[str, int] = defaultdict(int)
    for line in (dict_dir / "index.sense").read_text().splitlines():
        key, offset, _sense, tag_cnt = line.split()
        if "%1:" in key:
            counts[offset] += int(tag_cnt)
    data = dict_dir / "data.noun"
    files = [data] if data.exists() else sorted(dict_dir.glob("data.noun[0-9]"))
    synsets = []
    for file in files:
        for line in file.read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue
            fields = line.split()
            offset, lexfile, n_words = fields[0], fields[1], int(fields[3], 16)
            if lexfile not in CONCRETE_LEXFILES or counts.get(offset, 0) < MIN_TAG_COUNT:
                continue
            lemmas = [re.sub(r"\(.*\)$", "", fields[4 + 2 * i]) for i in range(n_words)]
            lemmas = [normalise(w) for w in lemmas if w.islower() and not re.search(r"[\d.]", w)]
            lemmas = [w for w in lemmas if 0 < len(w.split()) <= MAX_WORDS]
            if lemmas:
                synsets.append((counts[offset], lemmas))
    synsets.sort(key=lambda s: -s[0])
    return [lemmas for _, lemmas in synsets]


def singular(name: str, known: set[str]) -> str:
    """The singular of ``name`` when that singular is itself a known name ("apples" -> "apple")."""
    for suffix, repl in (("ies", "y"), ("es", ""), ("s", "")):
        if name.endswith(suffix) and name[: -len(suffix)] + repl in known:
            return name[: -len(suffix)] + repl
    return name


def build(dict_dir: Path) -> tuple[list[str], dict[str, str]]:
    curated = list(dict.fromkeys(read_list(HERE / "sources" / "coco.txt") + read_list(HERE / "sources" / "openimages_boxable.txt")))
    canonical: list[str] = list(curated)
    known = set(canonical)
    aliases: dict[str, str] = {}
    for lemmas in wordnet_synsets(dict_dir):
        head = next((w for w in lemmas if w in known), lemmas[0])
        if head in aliases:
            head = aliases[head]
        if head not in known:
            canonical.append(head)
            known.add(head)
        for w in lemmas:
            if w != head and w not in known and w not in aliases:
                aliases[w] = head
    for name in list(canonical):
        one = singular(name, known)
        if one != name:
            aliases[name] = one
    final = [n for n in dict.fromkeys(canonical) if n not in aliases]
    return final, aliases


def main(dict_dir: str) -> None:
    names, aliases = build(Path(dict_dir))
    header = "# cliplabel concept bank: one canonical concept a line. Rebuilt by build_concept_bank.py.\n"
    (HERE / "concepts.txt").write_text(header + "\n".join(names) + "\n")
    (HERE / "synonyms.tsv").write_text("alias\tcanonical\n" + "".join(f"{a}\t{c}\n" for a, c in sorted(aliases.items())))
    print(f"{len(names)} concepts, {len(aliases)} aliases")


if __name__ == "__main__":
    main(sys.argv[1])
