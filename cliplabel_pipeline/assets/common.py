"""Small helpers shared by the assets: heartbeats, provenance, Markdown tables."""


import os
from collections import Counter
from contextlib import contextmanager

import dagster as dg

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.heartbeat import Heartbeat, op_id

JOB_GROUP = "job_labelling"


class LabelingConfig(dg.Config):
    """Run config of the labelling step."""

    top_k: int = 3
    min_confidence: float = 0.25
    batch_size: int = 32


@contextmanager
def as_failure():
    """A ``CliplabelError`` (bad job id, unreadable job, locked database) ends the step as a ``Failure``
    whose description is the error's one line, instead of a user-code traceback."""
    try:
        yield
    except CliplabelError as exc:
        raise dg.Failure(description=str(exc)) from None


@contextmanager
def heartbeat(context):
    """Heartbeats for this step in the run's log, every ``CLIPLABEL_HEARTBEAT_S`` seconds (default 30)."""
    job = context.partition_key if context.has_partition_key else None
    op = op_id(context.run_id, str(context.op_execution_context.node_handle))
    interval = float(os.environ.get("CLIPLABEL_HEARTBEAT_S", "30"))
    with Heartbeat(op, job, context.log.info, interval):
        yield


def histogram_md(records: list[dict], limit: int = 20) -> str:
    counts = Counter(r["top1"] for r in records).most_common(limit)
    rows = "\n".join(f"| {name} | {n} |" for name, n in counts)
    return "| top-1 label | items |\n|---|---|\n" + rows
