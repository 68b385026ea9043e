"""Every setting of cliplabel: its one default, its bounds and its environment variable, in one model.

The CLI, the Dagster definitions and the HTTP service each call ``Settings.from_env()`` once per process and
pass the value on; nothing else reads ``CLIPLABEL_*`` variables or restates a default or a bound. The bounds
are types (``TopK``, ``Confidence``...) that the per-call values and every face's parameters reuse, and
``bad_values`` is the one place that turns a failed validation into the line a user reads, naming the value
as the user typed it (a variable, a flag, a query parameter, a run-config field).
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import annotated_types as at
from pydantic import BaseModel, BeforeValidator, Field, ValidationError, create_model
from pydantic_core import PydanticCustomError
from pydantic.functional_validators import AfterValidator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
DB_FILE = "cliplabel.duckdb"
ENV_PREFIX = "CLIPLABEL_"


def _user_path(value):
    """``~`` expanded in a path given as text (a variable); a ``Path`` (a flag, a caller) is taken as it is. Text
    of spaces alone is refused, not taken as a folder named by them: it is a variable set by mistake."""
    if isinstance(value, (str, Path)) and not str(value).strip():
        raise PydanticCustomError("blank", "must not be blank")
    return Path(value).expanduser() if isinstance(value, str) else value


def _not_blank(value: str) -> str:
    if value and not value.strip():
        raise PydanticCustomError("blank", "must not be blank")
    return value


def _device(value: str) -> str:
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise PydanticCustomError("device", "must be auto, cpu, cuda or cuda:<n>")


# The bounds, defined once: the settings below, the per-call ``LabelSettings``, the CLI's flags, the service's
# parameters and Dagster's run config all use these types.
MAX_TOP_K = 100  # labels kept per item at most: an answer's size, the same for every face
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K)]  # labels kept per item
MAX_BATCH_SIZE = 1024  # images per forward pass at most: what a large GPU takes; a short batch is padded to it
BatchSize = Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)]  # images per forward pass
Confidence = Annotated[float, Field(ge=0.0, le=1.0)]  # softmax confidence below it: flagged
Match = Annotated[float, Field(ge=0.0, le=1.0)]  # open-set match below it: flagged
Count = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]  # a wait: 0 is none
Interval = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]  # a period: never 0
Megabytes = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
UserPath = Annotated[Path, BeforeValidator(_user_path)]
MaybePath = Annotated[Path | None, BeforeValidator(_user_path)]  # one error for a blank one, not one per type
Port = Annotated[int, Field(ge=1, le=65535)]  # a TCP port to listen on (0 would be any free one: never meant)
Device = Annotated[str, AfterValidator(_device)]
Named = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]  # a model (a hub id or a folder), a broker URL
Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
ServiceRuns = Literal["auto", "dagster", "local"]
Executor = Literal["in_process", "celery"]
EXECUTORS = get_args(Executor)

NOT_VARIABLES = frozenset({"labels"})  # a run's own choice (--labels, a request's labels), never a variable


def offline_hub() -> None:
    """Keep the Hugging Face libraries offline: only ``cliplabel model pull`` may download."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "cliplabel"


class BadValue(ValueError):
    """A value out of its bounds: ``str()`` is one line per bad value, each naming it as the user gave it."""


class Settings(BaseSettings):
    """What a labelling run uses. ``Settings(...)`` is its arguments over the defaults, whatever the
    environment; ``Settings.from_env()`` applies the ``CLIPLABEL_*`` variables (each face calls it once)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True,
                                      frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    model: Named = DEFAULT_MODEL
    device: Device = "auto"
    precision: Precision = "auto"
    batch_size: BatchSize = 32
    top_k: TopK = 3
    min_confidence: Confidence = 0.25  # softmax confidence below it: flagged (the best candidate is not clear)
    min_match: Match = 0.5  # open-set match below it: flagged (no better than 95% of pictures of nothing)
    labels: tuple[str, ...] = ()
    labels_file: MaybePath = None
    templates_file: MaybePath = None
    results_root: UserPath = Path("results")
    db: MaybePath = None
    db_wait_s: Seconds = 30.0  # how long a write waits for another process that holds the DuckDB file
    job_wait_s: Seconds = 600.0  # how long labelling, cleanup or restore waits for another process on the same job
    cache_dir: UserPath = Field(default_factory=default_cache_dir, validation_alias=f"{ENV_PREFIX}CACHE")
    cache_max_mb: Megabytes = 512.0  # text-embedding cache files beyond this are evicted, least recently used first
    settle_s: Seconds = 10.0
    sensor_interval_s: Count = 30
    heartbeat_s: Interval = 30.0
    backfill_cron: Annotated[str, Field(min_length=1)] = "0 3 * * *"
    # the HTTP service
    api_token: str | None = Field(default=None, repr=False)  # when set, every endpoint but the health checks needs it
    public_url: str | None = None  # e.g. https://labels.example.org: status URLs built on it (else paths)
    batch_wait_ms: Seconds = 50.0  # the longest a batch waits for uploads still arriving or decoding (0: no wait)
    max_upload_bytes: Count = 20_000_000  # per uploaded file
    max_upload_pixels: Count = 40_000_000  # per uploaded image
    max_upload_files: Count = 256  # per request
    service_runs: ServiceRuns = "auto"  # where POST /classify/job runs: dagster, local, or auto (dagster when DAGSTER_HOME is set)
    # beyond one machine (deploy/): where a Dagster run's steps execute
    executor: Executor = "in_process"  # "in_process": one process per run; "celery": every step on a Celery worker
    broker: Named = "redis://127.0.0.1:6379/0"  # the Celery broker, and its result backend unless result_backend
    result_backend: str | None = None
    redeliver_s: Interval = 30.0  # a step whose worker stopped renewing its lease (died) goes to another worker after this

    def __init__(self, **values):
        # Only the arguments, through pydantic's own init: a ``Settings(...)`` is a value, never a read of the
        # environment (``from_env`` is), and costs microseconds where pydantic-settings' sources cost milliseconds.
        BaseModel.__init__(self, **values)

    @property
    def spools_lineage(self) -> bool:
        """True when steps run on other hosts: the labelling step writes the job's rows beside its outputs and
        one writer ingests them, so no two hosts ever write the DuckDB file."""
        return self.executor == "celery"

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """Defaults, then the ``CLIPLABEL_*`` variables (empty ones ignored), then ``overrides`` that are not None.
        A value out of bounds raises ``BadValue`` naming its variable (or its keyword, for an override). Names are
        read as ``ENV_VARS`` spells them, in upper case only: a ``cliplabel_top_k`` is not taken (and not named in
        an error as ``CLIPLABEL_TOP_K``); ``stray_variables`` says so."""
        given = _Variables(cls, case_sensitive=True)()
        given.update({k: v for k, v in overrides.items() if v is not None})
        names = {name: var for name, var in ENV_VARS.items() if name not in overrides or overrides[name] is None}
        return validated(cls, given, names)

    @property
    def waits(self) -> "Waits":
        """How long work on a job waits for another process (``CLIPLABEL_JOB_WAIT_S``, ``CLIPLABEL_DB_WAIT_S``)."""
        return Waits(self.job_wait_s, self.db_wait_s)

    @property
    def db_path(self) -> Path:
        """``CLIPLABEL_DB``, else ``cliplabel.duckdb`` beside the results root (not inside it: it is no job)."""
        return Path(self.db) if self.db else Path(self.results_root).resolve().parent / DB_FILE

    def with_(self, **changes) -> "Settings":
        """A copy with ``changes`` that are not None, validated as a new value is (``BadValue`` naming the
        keyword); ``model_copy(update=...)`` would skip the bounds."""
        given = {**self.model_dump(), **{k: v for k, v in changes.items() if v is not None}}
        return validated(type(self), given)


class _Variables(EnvSettingsSource):
    """The set, non-empty ``CLIPLABEL_*`` variables by field name, as text, each looked up by its one name in
    ``ENV_VARS``; none for ``NOT_VARIABLES``."""

    def get_field_value(self, field, field_name: str):
        if field_name in NOT_VARIABLES:
            return None, field_name, False
        var = ENV_VARS[field_name]  # on Windows the environment ignores case, and so does the source
        return self.env_vars.get(var if self.case_sensitive else var.lower()), field_name, False


def _env_name(name: str, info) -> str:
    return info.validation_alias if isinstance(info.validation_alias, str) else ENV_PREFIX + name.upper()


@dataclass(frozen=True)
class Waits:
    """How long work on a job waits for another process that holds what it needs: the job's lock (``job_s``),
    the DuckDB file (``db_s``). Read once with the settings (``Settings.waits``) and carried by the ``JobFolder``
    to every lock and write on the job; the defaults are the settings' own."""

    job_s: float = Settings.model_fields["job_wait_s"].default
    db_s: float = Settings.model_fields["db_wait_s"].default


# field name -> its environment variable (``cache_dir`` is ``CLIPLABEL_CACHE``)
ENV_VARS = {name: _env_name(name, info) for name, info in Settings.model_fields.items() if name not in NOT_VARIABLES}


def stray_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per set ``CLIPLABEL_*`` variable (in any case) that is none of ``ENV_VARS``, naming the nearest
    one: a misspelling is ignored, so it is said, once, where a face starts; it is no error."""
    known = sorted(ENV_VARS.values())
    rests = {var[len(ENV_PREFIX):]: var for var in known}  # compared without the prefix every name shares
    lines = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or name in known or not environ[name]:
            continue
        near = [rests[r] for r in difflib.get_close_matches(name[len(ENV_PREFIX):].upper(), rests, n=1, cutoff=0.6)]
        why = ("cliplabel reads its variables in upper case only" if name.upper() in known
               else "it is not a cliplabel variable")
        lines.append(f"{_shown_name(name)} is ignored: {why}" + (f"; did you mean {near[0]}?" if near else ""))
    return lines


_SAID: set[str] = set()


def say_stray_variables(say: Callable[[str], object] | None = None) -> None:
    """Each line of ``stray_variables`` said once per process (``cliplabel serve`` reads the variables twice: as
    the CLI, then as the service it starts), by ``say``: a ``cliplabel: warning:`` line on stderr by default."""
    for line in stray_variables(os.environ):
        if line not in _SAID:
            _SAID.add(line)
            (say or _warn)(line)


def _warn(line: str) -> None:
    print(f"cliplabel: warning: {line}", file=sys.stderr)


def _shown_name(name: str) -> str:
    """A variable's name as it can be printed: a control character in it is escaped, never sent to a terminal."""
    return name if name.isprintable() else repr(name)[1:-1]


def validated(model, values: Mapping[str, Any], names: Mapping[str, str] | None = None):
    """``model`` (a pydantic model or dataclass) from ``values``, or ``BadValue`` whose line names each bad
    value by ``names`` (field -> what the user typed; the field's own name where it has none)."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise BadValue(bad_values(model, exc, names)) from None


def check_value(model, field: str, value, name: str | None = None):
    """``value`` validated as ``model``'s ``field`` alone (a flag, a parameter), or ``BadValue`` naming ``name``
    (the field's own name when None; "" for no name, where the caller says it, as argparse does)."""
    try:
        done = model.__pydantic_validator__.validate_assignment(model.model_construct(), field, value)
    except ValidationError as exc:
        raise BadValue(bad_values(model, exc, {field: field if name is None else name})) from None
    return getattr(done, field)


def check_type(kind, value, name: str = ""):
    """``value`` validated as the bound type ``kind`` (``Port``: an option that is no setting), or ``BadValue``
    naming ``name`` ("" for no name, where the caller says it, as argparse does)."""
    return check_value(_holder(kind), "value", value, name)


@functools.cache
def _holder(kind) -> type[BaseModel]:
    """A model of one field of type ``kind``: its bounds are then a field's, and worded as every field's are."""
    return create_model("Value", value=(kind, ...))


def bad_values(model, exc: ValidationError | Sequence[Mapping[str, Any]], names: Mapping[str, str] | None = None) -> str:
    """One line for a failed validation of ``model`` (None where there is none to ask for both bounds of a
    field): ``<name> <what it must be>, got <what was given>`` per bad value, joined by '; '. ``exc`` may be the
    error list of a framework's own validation (FastAPI's, with the location of each error stripped to its
    field). The one place a pydantic error becomes words for a user."""
    fields = getattr(model, "model_fields", None) or getattr(model, "__pydantic_fields__", {})
    lines = []
    for err in exc.errors(include_url=False) if isinstance(exc, ValidationError) else exc:
        field = str(err["loc"][0]) if err["loc"] else ""
        field = next((f for f, info in fields.items() if info.validation_alias == field), field)
        name = (names or {}).get(field, field)
        info = fields.get(field)
        given = "" if err["type"] == "missing" else f", got {_shown(err.get('input'))}"
        lines.append(f"{name} {_must(err, info)}{given}".strip())
    return "; ".join(dict.fromkeys(lines))


def _must(err: Mapping[str, Any], info) -> str:
    kind = err["type"]
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        low, high = _bounds(info.metadata if info is not None else (), err.get("ctx", {}))
        if low and high:
            return f"must be between {_num(low[1])} and {_num(high[1])}"
        if low:
            return f"must be {'at least' if low[0] == 'ge' else 'more than'} {_num(low[1])}"
        return f"must be {'at most' if high[0] == 'le' else 'less than'} {_num(high[1])}"
    if kind == "literal_error":
        return f"must be one of {err['ctx']['expected'].replace(' or ', ', ')}"
    if kind in ("int_parsing", "int_type", "int_from_float", "float_parsing", "float_type", "finite_number"):
        whole = kind == "int_from_float" or (kind == "int_parsing" and _is_number(str(err.get("input"))))
        return "must be a whole number" if whole else "must be a number"
    if kind in ("string_too_short", "missing"):
        return "must be given" if kind == "missing" else "must not be empty"
    if kind == "extra_forbidden":
        return "is not a setting"
    message = str(err.get("msg", "is not valid"))
    return message if message.startswith("must") else f"is not valid ({message[:1].lower()}{message[1:]})"


def _bounds(metadata, ctx: Mapping[str, Any]) -> tuple[tuple | None, tuple | None]:
    low = high = None
    for item in metadata:
        if isinstance(item, at.Ge):
            low = ("ge", item.ge)
        elif isinstance(item, at.Gt):
            low = ("gt", item.gt)
        elif isinstance(item, at.Le):
            high = ("le", item.le)
        elif isinstance(item, at.Lt):
            high = ("lt", item.lt)
    for key in ("ge", "gt"):
        low = low or ((key, ctx[key]) if key in ctx else None)
    for key in ("le", "lt"):
        high = high or ((key, ctx[key]) if key in ctx else None)
    return low, high


def _num(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _shown(value) -> str:
    """What was given, short and on one line: a number as it is, text quoted."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    text = str(value)
    short = text[:40] + ("..." if len(text) > 40 else "")
    if isinstance(value, (int, float)):
        return short if isinstance(value, int) or math.isnan(value) else _num(value)
    if isinstance(value, str) and _is_number(text):
        return short.strip()
    return repr(short)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True

