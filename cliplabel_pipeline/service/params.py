"""Label options of a request, from its form or its query string, checked with one-line errors."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from pydantic import BaseModel

from cliplabel_pipeline.core.settings import BadValue, Confidence, Match, Settings, TopK, validated
from cliplabel_pipeline.core.values import LabelSettings
from cliplabel_pipeline.service.errors import ApiError

MAX_LABELS = 1000
MAX_LABEL_CHARS = 200


class RequestThresholds(BaseModel):
    """A request's ``top_k``, ``min_confidence`` and ``min_match``, within the settings' bounds."""

    top_k: TopK
    min_confidence: Confidence
    min_match: Match


@dataclass(frozen=True)
class LabelOptions:
    settings: LabelSettings
    labels: tuple[str, ...] = ()


def _pick(request: Request, name: str, form_value):
    value = form_value if form_value not in (None, "") else request.query_params.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int, float))):
        raise ApiError(422, f"{name} must be a plain value (a form field or query parameter), not a file or a list")
    return value


def label_options(request: Request, defaults: Settings, top_k=None, min_confidence=None, labels=None,
                  min_match=None) -> LabelOptions:
    """``top_k``, ``min_confidence``, ``min_match`` and ``labels`` (comma-separated) from the form, else the query,
    else defaults."""
    given = {"top_k": _pick(request, "top_k", top_k), "min_confidence": _pick(request, "min_confidence", min_confidence),
             "min_match": _pick(request, "min_match", min_match)}
    labels = _pick(request, "labels", labels)
    try:  # the parameters are named as the request names them: top_k must be between 1 and 100, got 0
        options = validated(RequestThresholds, {name: getattr(defaults, name) if value in (None, "") else value
                                                for name, value in given.items()})
    except BadValue as exc:
        raise ApiError(422, str(exc)) from None
    names = tuple(dict.fromkeys(x.strip() for x in str(labels).split(",") if x.strip())) if labels else ()
    if len(names) > MAX_LABELS or any(len(n) > MAX_LABEL_CHARS for n in names):
        raise ApiError(422, f"labels: at most {MAX_LABELS} labels of at most {MAX_LABEL_CHARS} characters each")
    if labels and not names:
        raise ApiError(422, "labels: give at least one label, comma-separated")
    return LabelOptions(LabelSettings(options.top_k, options.min_confidence, defaults.batch_size, options.min_match),
                        names)
