"""The ``cliplabel`` command line: the same core the Dagster assets call."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_MODEL = "openai/clip-vit-base-patch32"


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(name) or default


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=_env("CLIPLABEL_MODEL", DEFAULT_MODEL),
                   help="hub id (from the local cache) or model directory [CLIPLABEL_MODEL]")
    p.add_argument("--device", default=_env("CLIPLABEL_DEVICE", "auto"), choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default=_env("CLIPLABEL_PRECISION", "auto"), choices=["auto", "fp32", "bf16", "fp16", "int8"])
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--top-k", type=_positive_int, default=3)
    p.add_argument("--min-confidence", type=_unit_float, default=0.25)
    p.add_argument("--labels", help="comma-separated labels replacing the concept bank")
    p.add_argument("--labels-file", type=Path, help="one label a line, replacing the concept bank")
    p.add_argument("--templates-file", type=Path, help="one prompt template a line, with {} for the concept")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _db_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=Path, default=_env("CLIPLABEL_DB", None),
                   help="DuckDB lineage file [CLIPLABEL_DB; default cliplabel.duckdb beside the results root]")


def _results_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results-root", type=Path, default=_env("CLIPLABEL_RESULTS_ROOT", None),
                   help="folder holding <job_id>/ folders [CLIPLABEL_RESULTS_ROOT]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cliplabel", description="Zero-shot CLIP labels for segmentation jobs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("classify", help="label image files; one JSON record per line on stdout")
    p.add_argument("paths", nargs="+", type=Path)
    _add_model_options(p)
    p = sub.add_parser("job", help="label one job folder and write its labels.jsonl")
    p.add_argument("job_id")
    _results_root(p)
    _add_model_options(p)
    _db_option(p)
    p = sub.add_parser("cleanup", help="list (default) or quarantine items below a confidence threshold")
    p.add_argument("job_id")
    _results_root(p)
    p.add_argument("--min-confidence", type=_unit_float, default=0.25)
    p.add_argument("--apply", action="store_true", help="move them into <job>/quarantine/ and drop their rows")
    p.add_argument("--purge", action="store_true", help="with --apply: delete them for good instead")
    _db_option(p)
    p = sub.add_parser("restore", help="put quarantined items back, byte for byte, with their rows")
    p.add_argument("job_id")
    _results_root(p)
    _db_option(p)
    p = sub.add_parser("export", help="write one export of a labelled job")
    p.add_argument("job_id")
    _results_root(p)
    p.add_argument("--format", required=True, choices=["zip", "csv", "jsonl"])
    p.add_argument("-o", "--output", type=Path, help="file to write (default <job>/export/<job>.<format>)")
    p = sub.add_parser("model", help="model management")
    msub = p.add_subparsers(dest="model_command", required=True)
    pull = msub.add_parser("pull", help="download a model into the local Hugging Face cache (the only download)")
    pull.add_argument("--model", default=_env("CLIPLABEL_MODEL", DEFAULT_MODEL))
    p = sub.add_parser("demo", help="write toy jobs and label them with the bundled toy model")
    p.add_argument("--results-root", type=Path, default=None, help="where to write the toy jobs (a temp folder if not given)")
    p.add_argument("--jobs", type=_positive_int, default=3)
    return parser


def _labeller(args):
    from cliplabel_pipeline.core.labeller import Labeller

    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    return Labeller.create(args.model, args.device, args.precision, labels=labels, labels_file=args.labels_file,
                           templates_file=args.templates_file, top_k=args.top_k,
                           min_confidence=args.min_confidence, batch_size=args.batch_size)


def cmd_classify(args) -> int:
    missing = [str(p) for p in args.paths if not p.is_file()]
    if missing:
        raise _error(f"no such file: {', '.join(missing)}")
    records, skipped = _labeller(args).classify_paths(args.paths)
    for rec in records:
        print(json.dumps(rec, ensure_ascii=False))
    for entry in skipped:
        print(f"skipped {entry['path']}: {entry['reason']}", file=sys.stderr)
    return 0 if records else 1


def cmd_job(args) -> int:
    from cliplabel_pipeline.core.stages import process_job

    _job_folder(args)  # a bad id fails before the model loads
    printer = _progress_printer()
    done = process_job(_labeller(args), args.results_root, args.job_id, _db(args), printer)
    if printer:
        print(file=sys.stderr)  # end the progress line
    print(summarise_job(done))
    return 0


def _progress_printer():
    """``done/total items`` on one refreshed stderr line, when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    start = time.perf_counter()

    def show(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - start, 1e-9)
        print(f"\r  {done}/{total} items, {rate:.1f}/s", end="", file=sys.stderr, flush=True)

    return show


def _job_folder(args) -> Path:
    from cliplabel_pipeline.core.jobs import job_dir

    if args.results_root is None:
        raise _error("no results root: pass --results-root or set CLIPLABEL_RESULTS_ROOT")
    return job_dir(args.results_root, args.job_id)


def _db(args) -> Path:
    from cliplabel_pipeline.core.store import default_db_path

    return args.db or default_db_path(args.results_root)


def cmd_cleanup(args) -> int:
    from cliplabel_pipeline.core.cleanup import apply_cleanup, plan_cleanup

    folder = _job_folder(args)
    if args.purge and not args.apply:
        raise _error("--purge deletes files for good and only works together with --apply")
    plan = plan_cleanup(folder, args.min_confidence)
    for rec in plan:
        print(f"{rec['path']}\t{rec['top1']}\t{rec['confidence']:.3f}")
    if not args.apply:
        print(f"dry run: {len(plan)} items below {args.min_confidence} would go (add --apply)", file=sys.stderr)
        return 0
    apply_cleanup(folder, plan, _db(args), purge=args.purge)
    where = "deleted" if args.purge else f"moved to {folder / 'quarantine'} (undo: cliplabel restore {args.job_id})"
    print(f"{len(plan)} items {where}", file=sys.stderr)
    return 0


def cmd_restore(args) -> int:
    from cliplabel_pipeline.core.cleanup import restore

    restored = restore(_job_folder(args), _db(args))
    print(f"restored {len(restored)} items")
    return 0


def cmd_export(args) -> int:
    from cliplabel_pipeline.core.stages import export_format

    print(export_format(_job_folder(args), args.format, args.output))
    return 0


def summarise_job(done: dict) -> str:
    """A few lines saying what a job produced and where."""
    records, folder = done["records"], done["folder"]
    low = sum(r["low_confidence"] for r in records)
    truth = done["metrics"]["truth"]
    accuracy = f", accuracy {100 * truth['accuracy']:.1f}% on ground truth" if truth else ""
    return (f"{folder.name}: {len(records)} labelled ({low} low-confidence), "
            f"{len(done['embedded'].skipped)} skipped{accuracy}\n"
            f"  labels: {folder / 'labels.jsonl'}\n  report: {done['report']}")


def cmd_model_pull(args) -> int:
    from cliplabel_pipeline.core.model import pull_model

    print(f"{args.model} -> {pull_model(args.model)}")
    return 0


def cmd_demo(args) -> int:
    from cliplabel_pipeline.demo import run_demo

    root = args.results_root or Path(tempfile.mkdtemp(prefix="cliplabel-demo-"))
    run_demo(root, args.jobs)
    return 0


def _error(message: str):
    from cliplabel_pipeline.core.errors import CliplabelError

    return CliplabelError(message)


COMMANDS = {"classify": cmd_classify, "job": cmd_job, "model": cmd_model_pull, "demo": cmd_demo,
            "cleanup": cmd_cleanup, "restore": cmd_restore, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "model":
        os.environ["HF_HUB_OFFLINE"] = "1"  # only `model pull` may touch the network
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    from cliplabel_pipeline.core.errors import CliplabelError

    hf_logging.disable_progress_bar()
    try:
        return COMMANDS[args.command](args)
    except CliplabelError as exc:
        print(f"cliplabel: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cliplabel: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
