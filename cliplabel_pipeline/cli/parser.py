"""The ``cliplabel`` options: each with its default and one line, each command with examples."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from cliplabel_pipeline.core.organising.export import EXPORT_FORMATS, ONLY_CHOICES
from cliplabel_pipeline.core.settings import ENV_VARS, BadValue, Port, Precision, Settings, check_type, check_value

EXAMPLES = {
    "classify": ["cliplabel classify photo.jpg cut-out.png", "cliplabel classify 'shots/*.jpg' --top-k 5",
                 "cliplabel classify results/job-1/objects --labels cat,dog,bird"],
    "job": ["cliplabel job job-1 --results-root results", "cliplabel job job-1 --min-match 0.6 -v"],
    "cleanup": ["cliplabel cleanup job-1 --min-confidence 0.5            # a dry run: what would go",
                "cliplabel cleanup job-1 --min-confidence 0.5 --apply    # moved to job-1/quarantine/"],
    "restore": ["cliplabel restore job-1"],
    "export": ["cliplabel export job-1 --format zip", "cliplabel export job-1 --format csv -o - | head",
               "cliplabel export job-1 --format coco -o out/job-1-coco/    # annotations.json, results.json, source.png",
               "cliplabel export job-1 --format labelstudio --only flagged -o queue/   # the review queue"],
    "review": ["cliplabel review job-1 --from project-1-export.json --reviewer ana   # a Label Studio JSON export",
               "cliplabel review job-1 --from annotations.json                      # COCO edited in CVAT or FiftyOne",
               "cliplabel review job-1 --from decisions.jsonl   # lines of {\"path\", \"label\", \"decision\"}"],
    "model": ["cliplabel model pull --model openai/clip-vit-base-patch32"],
    "serve": ["cliplabel serve --results-root results --port 8000"],
    "demo": ["cliplabel demo --results-root demo/results"],
}


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's line (when there is one to show); the examples kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _examples(command: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[command])


def _setting(field: str):
    """An option's type: the text checked against the bounds of the ``Settings`` field (the ones a variable
    and a request parameter meet); argparse says which option failed: ``argument --top-k: must be between 1 and 100``."""

    def parse(text: str):
        try:
            return check_value(Settings, field, text, name="")
        except BadValue as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = field
    return parse


def _path(field: str):
    """A path option's type: refused as its variable is (blank: ``must not be blank``), else the path as typed."""
    check = _setting(field)

    def parse(text: str) -> Path:
        check(text)
        return Path(text)

    parse.__name__ = field
    return parse


def _port(text: str) -> int:
    """A port to listen on, 1 to 65535: refused before the server starts (0 would pick any free port)."""
    try:
        return check_type(Port, text)
    except BadValue as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _threshold_options(p: argparse.ArgumentParser, env: Settings) -> None:
    p.add_argument("--min-confidence", type=_setting("min_confidence"), default=env.min_confidence,
                   help="softmax confidence below it flags an item: no clear best candidate "
                        f"[{ENV_VARS['min_confidence']}]")
    p.add_argument("--min-match", type=_setting("min_match"), default=env.min_match,
                   help="open-set match below it flags an item: it matches none of the candidates "
                        f"[{ENV_VARS['min_match']}]")


def _model_options(p: argparse.ArgumentParser, env: Settings) -> None:
    p.add_argument("--model", default=env.model,
                   help=f"hub id (from the local cache) or model directory [{ENV_VARS['model']}]")
    p.add_argument("--device", type=_setting("device"), default=env.device, metavar="{auto,cpu,cuda,cuda:N}",
                   help="auto: CUDA when there is one, else the CPU")
    p.add_argument("--precision", type=_setting("precision"), default=env.precision,
                   metavar="{" + ",".join(get_args(Precision)) + "}",
                   help="auto: fp16 on CUDA, bf16 on a CPU with native bf16, else fp32; int8: CPU only")
    p.add_argument("--batch-size", type=_setting("batch_size"), default=env.batch_size, help="images per forward pass")
    p.add_argument("--top-k", type=_setting("top_k"), default=env.top_k, help="labels kept per item")
    _threshold_options(p, env)
    p.add_argument("--labels", help="comma-separated labels replacing the concept bank")
    p.add_argument("--labels-file", type=_path("labels_file"), default=env.labels_file,
                   help="one label a line, replacing the concept bank")
    p.add_argument("--templates-file", type=_path("templates_file"), default=env.templates_file,
                   help="one prompt template a line, with {} for the concept")


def _db_option(p: argparse.ArgumentParser, env: Settings) -> None:
    p.add_argument("--db", type=_path("db"), default=env.db,
                   help=f"DuckDB lineage file [{ENV_VARS['db']}; default cliplabel.duckdb beside the results root]")


def _job(p: argparse.ArgumentParser, env: Settings) -> None:
    p.add_argument("job_id", help="the job's folder name under the results root")
    _results_root(p, env)


def _results_root(p: argparse.ArgumentParser, env: Settings) -> None:
    given = "results_root" in env.model_fields_set  # CLIPLABEL_RESULTS_ROOT set: else the option is required
    p.add_argument("--results-root", type=_path("results_root"), default=env.results_root if given else None,
                   help=f"folder holding <job_id>/ folders [{ENV_VARS['results_root']}]")


def build_parser(env: Settings) -> argparse.ArgumentParser:
    """The parser; option defaults come from ``env`` (``Settings.from_env()``, read once by ``main``)."""
    parser = argparse.ArgumentParser(prog="cliplabel", description="Zero-shot CLIP labels for segmentation jobs.",
                                     epilog="run `cliplabel <command> --help` for a command's options and examples",
                                     formatter_class=_Help)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log one line per batch, heartbeats and every skipped item")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                              epilog=_examples(name), formatter_class=_Help)

    p = command("classify", "label image files, folders (recursively) or globs; one JSON record a line on stdout")
    p.add_argument("paths", nargs="+", help="image files, folders or quoted glob patterns")
    _model_options(p, env)
    p = command("job", "label one job folder: labels.jsonl, groups, exports and a report")
    _job(p, env)
    _model_options(p, env)
    _db_option(p, env)
    p = command("cleanup", "list (default) or quarantine the items below either threshold")
    _job(p, env)
    _threshold_options(p, env)
    p.add_argument("--apply", action="store_true", help="move them into <job>/quarantine/ and drop their rows")
    p.add_argument("--purge", action="store_true", help="with --apply: delete them for good instead")
    _db_option(p, env)
    p = command("restore", "put quarantined items back, byte for byte, with their rows")
    _job(p, env)
    _db_option(p, env)
    p = command("export", "write one export of a labelled job")
    _job(p, env)
    p.add_argument("--format", required=True, choices=list(EXPORT_FORMATS),
                   help="zip: grouped files with labels.jsonl and labels.csv; coco, hf, labelstudio: a folder that "
                        "COCO tools, Hugging Face datasets or Label Studio open as it is")
    p.add_argument("-o", "--output",
                   help="file or folder to write (a name ending in / is a folder, made if missing; coco, hf and "
                        "labelstudio fill a folder), '-' for standard output (a folder export as a ZIP) "
                        "(default <job>/export/<job>.<format>, or <job>/export/<job>-<format>/)")
    p.add_argument("--only", choices=list(ONLY_CHOICES), default="all",
                   help="flagged: only the review queue, the flagged items, least sure first")
    p.add_argument("--image-root", default=None,
                   help="labelstudio: URL prefix of the images, followed by <job>/<path> (default "
                        "'/data/local-files/?d=', Label Studio's local files with the results root as document root)")
    p = command("review", "take people's decisions back: a Label Studio export, an edited COCO file or review lines")
    _job(p, env)
    p.add_argument("--from", dest="source", required=True, type=Path, help="the file of reviews")
    p.add_argument("--reviewer", default=None, help="who decided (where the file does not say)")
    _db_option(p, env)
    p = command("model", "model management")
    msub = p.add_subparsers(dest="model_command", required=True)
    pull = msub.add_parser("pull", help="download a model into the local Hugging Face cache (the only download)",
                           formatter_class=_Help)
    pull.add_argument("--model", default=env.model, help="hub id (a local folder needs no download)")
    p = command("serve", "run the HTTP service (FastAPI on uvicorn) over a results root")
    _results_root(p, env)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="port to listen on, 1 to 65535")
    _model_options(p, env)
    _db_option(p, env)
    p = command("demo", "write toy jobs and label them with the bundled toy model")
    p.add_argument("--results-root", type=_path("results_root"), default=None,
                   help="where to write the toy jobs (a temp folder when not given); the lineage database "
                        "goes beside it")
    p.add_argument("--jobs", type=_positive_int, default=3, help="how many toy jobs")
    _db_option(p, env)
    return parser
