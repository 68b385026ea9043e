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

# Light at import: the heavy core (torch, transformers) is imported inside the commands that need it.
from cliplabel_pipeline.core.settings import ENV_VARS, Settings, offline_hub
from cliplabel_pipeline.core.storage.guarded import shown


def _add_model_options(p: argparse.ArgumentParser, env: Settings) -> None:
    p.add_argument("--model", default=env.model,
                   help="hub id (from the local cache) or model directory [CLIPLABEL_MODEL]")
    p.add_argument("--device", default=env.device, choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default=env.precision, choices=["auto", "fp32", "bf16", "fp16", "int8"])
    p.add_argument("--batch-size", type=_positive_int, default=env.batch_size)
    p.add_argument("--top-k", type=_positive_int, default=env.top_k)
    _threshold_options(p, env)
    p.add_argument("--labels", help="comma-separated labels replacing the concept bank")
    p.add_argument("--labels-file", type=Path, default=env.labels_file,
                   help="one label a line, replacing the concept bank")
    p.add_argument("--templates-file", type=Path, default=env.templates_file,
                   help="one prompt template a line, with {} for the concept")


def _threshold_options(p: argparse.ArgumentParser, env: Settings) -> None:
    p.add_argument("--min-confidence", type=_unit_float, default=env.min_confidence,
                   help="softmax confidence below it flags an item: no clear best candidate "
                        f"(default {env.min_confidence}) [CLIPLABEL_MIN_CONFIDENCE]")
    p.add_argument("--min-match", type=_unit_float, default=env.min_match,
                   help="open-set match below it flags an item: it matches none of the candidates "
                        f"(default {env.min_match}) [CLIPLABEL_MIN_MATCH]")


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


def _db_option(p: argparse.ArgumentParser, env: Settings) -> None:
    p.add_argument("--db", type=Path, default=env.db,
                   help="DuckDB lineage file [CLIPLABEL_DB; default cliplabel.duckdb beside the results root]")


def _results_root(p: argparse.ArgumentParser, env: Settings) -> None:
    p.add_argument("--results-root", type=Path, default=env.results_root if os.environ.get(ENV_VARS["results_root"]) else None,
                   help="folder holding <job_id>/ folders [CLIPLABEL_RESULTS_ROOT]")


def build_parser(env: Settings | None = None) -> argparse.ArgumentParser:
    """The parser; option defaults come from ``Settings`` with the ``CLIPLABEL_*`` variables applied."""
    env = env or Settings.from_env()
    parser = argparse.ArgumentParser(prog="cliplabel", description="Zero-shot CLIP labels for segmentation jobs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("classify", help="label image files; one JSON record per line on stdout")
    p.add_argument("paths", nargs="+", type=Path)
    _add_model_options(p, env)
    p = sub.add_parser("job", help="label one job folder and write its labels.jsonl")
    p.add_argument("job_id")
    _results_root(p, env)
    _add_model_options(p, env)
    _db_option(p, env)
    p = sub.add_parser("cleanup", help="list (default) or quarantine items below either threshold")
    p.add_argument("job_id")
    _results_root(p, env)
    _threshold_options(p, env)
    p.add_argument("--apply", action="store_true", help="move them into <job>/quarantine/ and drop their rows")
    p.add_argument("--purge", action="store_true", help="with --apply: delete them for good instead")
    _db_option(p, env)
    p = sub.add_parser("restore", help="put quarantined items back, byte for byte, with their rows")
    p.add_argument("job_id")
    _results_root(p, env)
    _db_option(p, env)
    p = sub.add_parser("export", help="write one export of a labelled job")
    p.add_argument("job_id")
    _results_root(p, env)
    p.add_argument("--format", required=True, choices=["zip", "csv", "jsonl"])
    p.add_argument("-o", "--output", type=Path,
                   help="file or folder to write, '-' for standard output (default <job>/export/<job>.<format>)")
    p = sub.add_parser("model", help="model management")
    msub = p.add_subparsers(dest="model_command", required=True)
    pull = msub.add_parser("pull", help="download a model into the local Hugging Face cache (the only download)")
    pull.add_argument("--model", default=env.model)
    p = sub.add_parser("serve", help="run the HTTP service (FastAPI on uvicorn) over a results root")
    _results_root(p, env)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    _add_model_options(p, env)
    _db_option(p, env)
    p = sub.add_parser("demo", help="write toy jobs and label them with the bundled toy model")
    p.add_argument("--results-root", type=Path, default=None, help="where to write the toy jobs (a temp folder if not given)")
    p.add_argument("--jobs", type=_positive_int, default=3)
    return parser


def _settings(args) -> Settings:
    labels = tuple(x.strip() for x in args.labels.split(",") if x.strip()) if args.labels else ()
    return Settings.from_env().with_(model=args.model, device=args.device, precision=args.precision, batch_size=args.batch_size,
                     top_k=args.top_k, min_confidence=args.min_confidence, min_match=args.min_match,
                     labels=labels,
                     labels_file=args.labels_file, templates_file=args.templates_file,
                     results_root=getattr(args, "results_root", None), db=getattr(args, "db", None))


def _quiet_transformers() -> None:
    """Transformers' own progress bars and notices say nothing a cliplabel user can act on."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _load(settings: Settings):
    from cliplabel_pipeline.core.labeller import Labeller

    _quiet_transformers()

    return Labeller.load(settings)


def cmd_classify(args) -> int:
    from cliplabel_pipeline.core.values import LabelSettings

    missing = [str(p) for p in args.paths if not p.is_file()]
    if missing:
        raise _error(f"no such file: {', '.join(missing)}")
    settings = _settings(args)
    records, skipped = _load(settings).classify_paths(args.paths, LabelSettings.from_settings(settings))
    for rec in records:
        print(json.dumps(rec.to_json(), ensure_ascii=False))
    for entry in skipped:
        print(f"skipped {entry.path}: {entry.reason}", file=sys.stderr)
    return 0 if records else 1


def cmd_job(args) -> int:
    from cliplabel_pipeline.core.pipeline import process_job
    from cliplabel_pipeline.core.values import LabelSettings

    job = _job_folder(args)  # a bad id fails before the model loads
    settings = _settings(args)
    printer = _progress_printer()
    done = process_job(_load(settings), job, LabelSettings.from_settings(settings), settings.db_path, printer)
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


def _job_folder(args):
    from cliplabel_pipeline.core.job_folder import JobFolder

    return JobFolder.open(args.results_root, args.job_id)


def _db(args) -> Path:
    return Settings.from_env().with_(results_root=args.results_root, db=args.db).db_path


def cmd_cleanup(args) -> int:
    from cliplabel_pipeline.core import upkeep
    from cliplabel_pipeline.core.organising.cleanup import plan_cleanup

    job = _job_folder(args)
    if args.purge and not args.apply:
        raise _error("--purge deletes files for good and only works together with --apply")
    upkeep.recover(job, _db(args))
    plan = plan_cleanup(job, args.min_confidence, args.min_match)
    for rec in plan:
        match = "-" if rec.match is None else f"{rec.match:.3f}"
        print(f"{shown(rec.path)}\t{rec.top1}\t{rec.confidence:.3f}\t{match}")
    if not args.apply:
        print(f"dry run: {len(plan)} items below confidence {args.min_confidence} or match {args.min_match} "
              "would go (add --apply)", file=sys.stderr)
        return 0
    done = upkeep.cleanup(job, plan, _db(args), purge=args.purge)
    where = "deleted" if args.purge else f"moved to {job.quarantine_dir} (undo: cliplabel restore {args.job_id})"
    print(f"{len(done.paths)} items {where}", file=sys.stderr)
    return 0


def cmd_restore(args) -> int:
    from cliplabel_pipeline.core import upkeep

    done = upkeep.restore(_job_folder(args), _db(args))
    print(f"restored {len(done.paths)} items")
    return 0


def cmd_export(args) -> int:
    from cliplabel_pipeline.core.pipeline import export_format, write_export

    job = _job_folder(args)
    if str(args.output) == "-":
        write_export(job, args.format, sys.stdout.buffer)
        sys.stdout.flush()
    else:
        print(export_format(job, args.format, args.output))
    return 0


def summarise_job(done) -> str:
    """A few lines saying what a job produced and where."""
    lab = done.labelled
    low = sum(r.low_confidence for r in lab.records)
    truth = done.metrics.truth
    accuracy = f", accuracy {100 * truth.accuracy:.1f}% on ground truth" if truth and truth.evaluated else ""
    return (f"{lab.job.id}: {len(lab.records)} labelled ({low} low-confidence), "
            f"{len(lab.skipped)} skipped{accuracy}\n"
            f"  labels: {lab.job.labels_jsonl}\n  report: {done.report}")


def cmd_model_pull(args) -> int:
    from cliplabel_pipeline.core.encoding.model import pull_model

    print(f"{args.model} -> {pull_model(args.model)}")
    return 0


def cmd_serve(args) -> int:
    if args.results_root is None:
        raise _error("no results root: pass --results-root or set CLIPLABEL_RESULTS_ROOT")
    if not args.results_root.is_dir():
        raise _error(f"results root {args.results_root} does not exist")
    try:
        import uvicorn
    except ImportError:
        raise _error("the HTTP service needs its extra: pip install 'cliplabel_pipeline[serve]'") from None
    settings = _settings(args)
    if settings.labels:
        raise _error("serve takes no --labels: the bank is the server's; a request may send its own labels")
    # the service reads its settings from the environment, as under any ASGI server
    for name, value in (("results_root", settings.results_root.resolve()), ("model", settings.model),
                        ("device", settings.device), ("precision", settings.precision),
                        ("batch_size", settings.batch_size), ("top_k", settings.top_k),
                        ("min_confidence", settings.min_confidence), ("min_match", settings.min_match),
                        ("labels_file", settings.labels_file),
                        ("templates_file", settings.templates_file), ("db", settings.db)):
        if value is not None:
            os.environ[ENV_VARS[name]] = str(value)
    # by name, so the CLI and the HTTP face stay independent of each other
    uvicorn.run("cliplabel_pipeline.service.app:create_app", factory=True, host=args.host, port=args.port,
                log_level="info", access_log=args.verbose)
    return 0


def cmd_demo(args) -> int:
    from cliplabel_pipeline.toyworld.demo import run_demo

    root = args.results_root or Path(tempfile.mkdtemp(prefix="cliplabel-demo-"))
    _quiet_transformers()
    for done in run_demo(root, args.jobs):
        print(summarise_job(done))
    print(f"results root: {root}  (open <job>/report/report.md to see what was labelled)")
    return 0


def _error(message: str):
    from cliplabel_pipeline.core.errors import CliplabelError

    return CliplabelError(message)


COMMANDS = {"classify": cmd_classify, "job": cmd_job, "model": cmd_model_pull, "demo": cmd_demo, "serve": cmd_serve,
            "cleanup": cmd_cleanup, "restore": cmd_restore, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "model":
        offline_hub()  # only `model pull` may touch the network
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler], force=True)
    from cliplabel_pipeline.core.errors import CliplabelError

    try:
        return COMMANDS[args.command](args)
    except CliplabelError as exc:
        print(f"cliplabel: error: {shown(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`| head`): end quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"cliplabel: error: {shown(where)}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cliplabel: interrupted", file=sys.stderr)
        return 130


class _PrintableFormatter(logging.Formatter):
    """Log lines with control characters from file names escaped, so they cannot drive the terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return shown(super().format(record))


if __name__ == "__main__":
    sys.exit(main())
