"""The ``cliplabel`` command line: the same core the Dagster assets call."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

# Light at import: the heavy core (torch, transformers) is imported inside the commands that need it.
from cliplabel_pipeline.cli.parser import build_parser
from cliplabel_pipeline.cli.progress import ProgressView
from cliplabel_pipeline.core.job_folder import SOURCE_NAME
from cliplabel_pipeline.core.settings import ENV_VARS, BadValue, Settings, offline_hub, say_stray_variables
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.core.words import counted

__all__ = ["build_parser", "main"]
log = logging.getLogger("cliplabel")


def _settings(args, env: Settings) -> Settings:
    """``env`` (the variables, read once by ``main``) with the command's options laid over it."""
    labels = tuple(x.strip() for x in args.labels.split(",") if x.strip()) if args.labels is not None else ()
    if args.labels is not None and not labels:
        raise _error(f"--labels {args.labels!r} names no label: give comma-separated names, or leave it out for "
                     f"the concept bank")
    return env.with_(model=args.model, device=args.device, precision=args.precision, batch_size=args.batch_size,
                     top_k=args.top_k, min_confidence=args.min_confidence, min_match=args.min_match,
                     labels=labels,
                     labels_file=args.labels_file, templates_file=args.templates_file,
                     results_root=getattr(args, "results_root", None), db=getattr(args, "db", None))


def _load(settings: Settings, progress=None):
    from cliplabel_pipeline.core.labeller import Labeller

    return Labeller.load(settings, progress)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".mpo"}


def image_paths(args: list[str]) -> list[Path]:
    """Files as given; folders walked for image files (recursively, in order); glob patterns expanded.

    In a folder, every entry with an image suffix that is not a folder is taken, a FIFO or a dangling link too:
    the reader then skips it with its reason, as when it is named, rather than it vanishing unsaid."""
    found: list[Path] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
        elif path.exists() or path.is_symlink():
            found.append(path)
        elif any(c in arg for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(arg, recursive=True))
            if not matches:
                raise _error(f"no file matches {arg!r}")
            found += [m for m in matches if not m.is_dir()]
        else:
            raise _error(f"no such file or folder: {arg}")
    if not found:
        raise _error(f"no image files in {', '.join(args)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return list(dict.fromkeys(found))


def cmd_classify(args, env: Settings) -> int:
    from cliplabel_pipeline.core.values import LabelSettings

    paths = image_paths(args.paths)
    settings = _settings(args, env)
    with ProgressView() as view:
        records, skipped = _load(settings, view).classify_paths(paths, LabelSettings.from_settings(settings), view)
    for rec in records:
        print(json.dumps(rec.to_json(), ensure_ascii=False))
    if not args.verbose:  # with -v the log has said each already
        for entry in skipped:
            print(f"skipped {shown(entry.path)}: {entry.reason}", file=sys.stderr)
    if not records:  # the input was read and judged: a failed run (1), not a usage error (2)
        print(f"cliplabel: error: none of the {len(paths)} files could be labelled (each skip is listed above)",
              file=sys.stderr)
        return 1
    return 0


def cmd_job(args, env: Settings) -> int:
    from cliplabel_pipeline.core.heartbeat import Heartbeat, op_id
    from cliplabel_pipeline.core.pipeline import process_job
    from cliplabel_pipeline.core.values import LabelSettings

    job = _job_folder(args, env)  # a bad id fails before the model loads
    settings = _settings(args, env)
    with ProgressView() as view:
        labeller = _load(settings, view)
        beat = Heartbeat(op_id("cli", job.id, str(os.getpid())), job.id, log.info, settings.heartbeat_s)
        with beat if args.verbose else contextlib.nullcontext():
            done = process_job(labeller, job, LabelSettings.from_settings(settings), settings.db_path, view)
    print(summarise_job(done))
    return 0


def _job_folder(args, env: Settings):
    from cliplabel_pipeline.core.job_folder import JobFolder

    return JobFolder.open(args.results_root, args.job_id, env.waits)


def _db(args, env: Settings) -> Path:
    return env.with_(results_root=args.results_root, db=args.db).db_path


def cmd_cleanup(args, env: Settings) -> int:
    from cliplabel_pipeline.core import upkeep
    from cliplabel_pipeline.core.organising.cleanup import cleanup_candidates, nothing_words, plan_words

    job = _job_folder(args, env)
    if args.purge and not args.apply:
        raise _error("--purge deletes files for good and only works together with --apply")
    upkeep.recover(job, _db(args, env), env)
    candidates = cleanup_candidates(job, args.min_confidence, args.min_match)
    plan = [f.record for f in candidates]
    for rec in plan:
        match = "-" if rec.match is None else f"{rec.match:.3f}"
        print(f"{shown(rec.path)}\t{rec.top1}\t{rec.confidence:.3f}\t{match}")
    if not args.apply:
        print(f"dry run: {plan_words(candidates, args.min_confidence, args.min_match)} (add --apply); "
              f"{SOURCE_NAME} never goes (masks are read through it), whatever its scores", file=sys.stderr)
        return 0
    done = upkeep.cleanup(job, plan, _db(args, env), env, purge=args.purge)
    if not done.paths:  # no undo to offer: restore would say there is nothing in quarantine
        print(f"0 items {'deleted' if args.purge else 'moved'}: {nothing_words(args.min_confidence, args.min_match)}",
              file=sys.stderr)
        return 0
    where = "deleted" if args.purge else f"moved to {job.quarantine_dir} (undo: cliplabel restore {args.job_id})"
    print(f"{counted(len(done.paths), 'item')} {where}", file=sys.stderr)
    return 0


def cmd_restore(args, env: Settings) -> int:
    from cliplabel_pipeline.core import upkeep

    done = upkeep.restore(_job_folder(args, env), _db(args, env), env)
    print(f"restored {counted(len(done.paths), 'item')}")
    return 0


def cmd_export(args, env: Settings) -> int:
    from cliplabel_pipeline.core.pipeline import export_format, write_export

    job = _job_folder(args, env)
    if args.output == "-":
        write_export(job, args.format, sys.stdout.buffer, args.only, args.image_root)
        sys.stdout.flush()
        return 0
    out = Path(args.output).expanduser() if args.output else None
    if args.output and args.output.endswith(("/", os.sep)):  # meant as a folder: Path() would drop the slash
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _error(f"cannot make the folder {shown(args.output)}: {exc.strerror or exc}") from None
    print(export_format(job, args.format, out, args.only, args.image_root))
    return 0


def cmd_review(args, env: Settings) -> int:
    from cliplabel_pipeline.core.reviewing import import_reviews

    job = _job_folder(args, env)
    try:
        data = args.source.read_bytes()
    except OSError as exc:
        raise _error(f"cannot read {shown(str(args.source))}: {exc.strerror or exc}") from None
    done = import_reviews(job, str(args.source), data, _db(args, env), args.reviewer, env)
    for u in done.unmatched:
        print(f"not matched: {shown(u.entry)}: {shown(u.reason)}", file=sys.stderr)
    print(done.summary())
    if done.stale:
        print(f"groups, exports and report not rebuilt ({done.stale}): run `cliplabel job {job.id}`", file=sys.stderr)
    return 0


def summarise_job(done) -> str:
    """A few lines saying what a job produced and where."""
    lab = done.labelled
    truth = done.metrics.truth
    accuracy = f", accuracy {100 * truth.accuracy:.1f}% on ground truth" if truth and truth.evaluated else ""
    return (f"{lab.job.id}: {len(lab.records)} labelled: {done.metrics.scores.headline()}; "
            f"{len(lab.skipped)} skipped{accuracy}\n"
            f"  labels: {lab.job.labels_jsonl}\n  report: {done.report}")


def cmd_model_pull(args, env: Settings) -> int:
    from cliplabel_pipeline.core.encoding.model import pull_model

    if Path(args.model).expanduser().is_dir():  # e.g. CLIPLABEL_MODEL set to the toy model: read from there as is
        print(f"{args.model} is a local folder: nothing to download (--model and CLIPLABEL_MODEL use it as it is)")
        return 0
    print(f"{args.model} -> {pull_model(args.model)}")
    return 0


def cmd_serve(args, env: Settings) -> int:
    if args.results_root is None:
        raise _error("no results root: pass --results-root or set CLIPLABEL_RESULTS_ROOT")
    if not args.results_root.is_dir():
        raise _error(f"results root {args.results_root} does not exist")
    try:
        import uvicorn
    except ImportError:
        raise _error("the HTTP service needs its extra: pip install 'cliplabel_pipeline[serve]'") from None
    settings = _settings(args, env)
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


def cmd_demo(args, env: Settings) -> int:
    from cliplabel_pipeline.toyworld.demo import run_demo

    # a temp folder of its own, so the database beside the results root is the demo's too
    root = args.results_root or Path(tempfile.mkdtemp(prefix="cliplabel-demo-")) / "results"
    db_path = env.with_(results_root=root, db=args.db).db_path
    for done in run_demo(root, env, args.jobs, db_path):
        print(summarise_job(done))
    print(f"results root: {root}  (open <job>/report/report.md to see what was labelled)")
    print(f"lineage: {db_path}")
    return 0


def _error(message: str):
    from cliplabel_pipeline.core.errors import CliplabelError

    return CliplabelError(message)


COMMANDS = {"classify": cmd_classify, "job": cmd_job, "model": cmd_model_pull, "demo": cmd_demo, "serve": cmd_serve,
            "cleanup": cmd_cleanup, "restore": cmd_restore, "export": cmd_export, "review": cmd_review}


def main(argv: list[str] | None = None) -> int:
    say_stray_variables()  # a misspelled CLIPLABEL_* variable: one warning line, then on as if it were not set
    try:
        env = Settings.from_env()  # the one read of the CLIPLABEL_* variables in this process
    except BadValue as exc:
        print(f"cliplabel: error: {shown(exc)}", file=sys.stderr)
        return 2
    args = build_parser(env).parse_args(argv)
    if args.command != "model":
        offline_hub()  # only `model pull` may touch the network
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler], force=True)
    from cliplabel_pipeline.core.errors import CliplabelError

    try:
        return COMMANDS[args.command](args, env)
    except (CliplabelError, BadValue) as exc:
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
