"""Small helpers shared by the assets: run config, one-line failures, heartbeats, Markdown tables."""

from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from pydantic import ValidationError, model_validator

from cliplabel_pipeline.core.errors import CliplabelError, JobGone
from cliplabel_pipeline.core.heartbeat import Heartbeat, op_id
from cliplabel_pipeline.core.settings import BatchSize, Confidence, Match, Settings, TopK, bad_values
from cliplabel_pipeline.core.values import BankSpec, LabelSettings

JOB_GROUP = "job_labelling"
DEFAULTS = Settings()


class CheckedConfig(dg.Config):
    """Run config whose fields keep the bounds of the settings' types: a value out of them fails the step at
    its start with one line naming the field (``top_k must be between 1 and 100, got 0``), not retried (the same
    config would fail again), instead of a pydantic traceback."""

    @model_validator(mode="wrap")
    @classmethod
    def _one_line(cls, data, handler):
        try:
            return handler(data)
        except ValidationError as exc:
            raise dg.Failure(description=f"run config: {bad_values(cls, exc)}", allow_retries=False) from None


class LabelingConfig(CheckedConfig):
    """Run config of the labelling steps; ``labels``/``labels_file``/``templates_file`` replace the bank of
    the ``clip`` resource for this run (the backfill passes a job's own choice back this way)."""

    top_k: TopK = DEFAULTS.top_k
    min_confidence: Confidence = DEFAULTS.min_confidence
    batch_size: BatchSize = DEFAULTS.batch_size
    min_match: Match = DEFAULTS.min_match
    labels: list[str] = []
    labels_file: str | None = None
    templates_file: str | None = None

    def label_settings(self) -> LabelSettings:
        return LabelSettings(self.top_k, self.min_confidence, self.batch_size, self.min_match)

    def bank_spec(self, default: BankSpec) -> BankSpec:
        spec = BankSpec(tuple(self.labels), self.labels_file, self.templates_file)
        return default if spec.is_default else spec


# Every step of a job is safe to repeat (atomic writes, rows replaced per job): a failed step is tried again,
# after 5, 10 and 20 s (a full disk freed, the broker back, a busy database); then its run is retried
# (deploy/dagster.yaml). Not a step whose job is gone: that is lasting (``as_failure``).
STEP_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL)
NO_RUN_RETRY_TAG = "dagster/retry_on_asset_or_op_failure"  # read from the run when it fails


@contextmanager
def as_failure(context=None):
    """A ``CliplabelError`` (bad job id, unreadable job, locked database) ends the step as a ``Failure``
    whose description is the error's one line, instead of a user-code traceback. A job gone (``JobGone``) is a
    lasting fault: the step is not retried, and (given the step's ``context``) neither is its run."""
    try:
        yield
    except JobGone as exc:
        if context is not None:
            context.instance.add_run_tags(context.run.run_id, {NO_RUN_RETRY_TAG: "false"})
        raise dg.Failure(description=f"{exc} (not retried: the job is gone)", allow_retries=False) from None
    except CliplabelError as exc:
        raise dg.Failure(description=str(exc)) from None


@contextmanager
def heartbeat(context, every_s: float):
    """Heartbeats for this step in the run's log, every ``every_s`` seconds (``CLIPLABEL_HEARTBEAT_S``, from the
    settings the model resource read)."""
    job = context.partition_key if context.has_partition_key else None
    op = op_id(context.run.run_id, str(context.op_execution_context.node_handle))
    with Heartbeat(op, job, context.log.info, every_s):
        yield


def histogram_md(records, limit: int = 20) -> str:
    counts = Counter(r.top1 for r in records).most_common(limit)
    rows = "\n".join(f"| {name} | {n} |" for name, n in counts)
    return "| top-1 label | items |\n|---|---|\n" + rows


def path_md(path: Path) -> dg.MetadataValue:
    return dg.MetadataValue.path(str(path))
