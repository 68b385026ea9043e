"""How fast the light commands start: ``--help``, ``export``, ``cleanup`` (dry run) and ``restore``.

    python benchmarks/startup.py [--rounds 5]

Writes one toy job (labelled once with the toy model), then times each command as a fresh process, the way a
person runs it, and prints the median and the slowest of ``--rounds`` runs beside the target of 1 s.
``cleanup --apply`` and ``restore`` (which rebuild groups, exports and the report without the model) are timed
in turns against 1.5 s. ``job``, which loads the model, is shown once for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 1.0
REBUILD_TARGET_S = 1.5


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cliplabel_pipeline.cli", *argv], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results"
        subprocess.run([sys.executable, "-m", "cliplabel_pipeline.cli", "demo", "--results-root", str(root),
                        "--jobs", "1"], check=True, stdout=subprocess.DEVNULL)
        job = ["demo-000", "--results-root", str(root)]
        light = {
            "--help": ["--help"],
            "export --format csv": ["export", *job, "--format", "csv", "-o", str(Path(tmp) / "x.csv")],
            "export --format zip": ["export", *job, "--format", "zip", "-o", str(Path(tmp) / "x.zip")],
            "cleanup (dry run)": ["cleanup", *job],
            "restore (nothing to restore)": ["restore", *job],
        }
        print(f"| command | median s | slowest s | within {TARGET_S:.0f} s |\n|---|---|---|---|")
        ok = True
        for name, argv in light.items():
            times = [timed(argv) for _ in range(args.rounds)]
            ok &= max(times) <= TARGET_S
            print(f"| `cliplabel {name}` | {statistics.median(times):.2f} | {max(times):.2f} | "
                  f"{'yes' if max(times) <= TARGET_S else 'NO'} |")
        # the commands that change the job and rebuild its outputs (groups, exports, report), in turns
        applied, restored = [], []
        for _ in range(args.rounds):
            applied.append(timed(["cleanup", *job, "--min-confidence", "0.99999", "--apply"]))
            restored.append(timed(["restore", *job]))
        for name, times in (("cleanup --apply (rebuilds outputs)", applied), ("restore (rebuilds outputs)", restored)):
            ok &= max(times) <= REBUILD_TARGET_S
            print(f"| `cliplabel {name}` | {statistics.median(times):.2f} | {max(times):.2f} | "
                  f"{'yes' if max(times) <= REBUILD_TARGET_S else 'NO'} (target {REBUILD_TARGET_S} s) |")
        model = str(Path(__file__).resolve().parents[1] / "cliplabel_pipeline" / "toyworld" / "model")
        heavy = timed(["job", *job, "--model", model])
        print(f"| `cliplabel job` (toy model, for comparison) | {heavy:.2f} | | |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
