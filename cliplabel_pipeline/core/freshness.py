"""Whether a job's labels are stale: judged against what that job asked for, never against the defaults.

A job is relabelled when it has no labels, or when the model, concept bank or templates it was labelled
with changed underneath it (new weights at the same model path, a new bank version, an edited labels or
templates file). A person's own labels, templates, thresholds or model are never replaced by the defaults:
a job labelled with another model than the deployment's is left alone.
"""

from __future__ import annotations

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.encoding.weights import model_identity, resolve_model_dir
from cliplabel_pipeline.core.labelling.concepts import bank_for
from cliplabel_pipeline.core.storage.runs import RecordedRun


def relabel_reason(previous: RecordedRun | None, model: str) -> str | None:
    """``"missing"``, ``"model changed"``, ``"bank changed"``, ``"templates changed"``, or None when fresh.

    ``model`` is the model the deployment labels with.
    """
    if previous is None:
        return "missing"
    if previous.model != model:
        return None
    try:
        model_dir = resolve_model_dir(model)
        if model_identity(model_dir) != previous.model_identity:
            return "model changed"
        bank = bank_for(previous.bank, model_dir)
    except CliplabelError:
        return None  # the model or the job's own labels file is gone: nothing to relabel with
    if bank.version != previous.bank_version:
        return "bank changed"
    if bank.templates_hash != previous.templates_hash:
        return "templates changed"
    return None
