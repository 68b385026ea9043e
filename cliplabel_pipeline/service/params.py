"""Label options of a request, from its form or its query string, checked with one-line errors."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from cliplabel_pipeline.core.settings import Settings
from cliplabel_pipeline.core.values import LabelSettings
from cliplabel_pipeline.service.errors import ApiError

MAX_LABELS = 1000
MAX_LABEL_CHARS = 200


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
    top_k = _pick(request, "top_k", top_k)
    min_confidence = _pick(request, "min_confidence", min_confidence)
    min_match = _pick(request, "min_match", min_match)
    labels = _pick(request, "labels", labels)
    k = defaults.top_k if top_k in (None, "") else _number(int, "top_k", top_k)
    if not 1 <= k <= 100:
        raise ApiError(422, f"top_k must be between 1 and 100, got {k}")
    conf = _unit(defaults.min_confidence, "min_confidence", min_confidence)
    match = _unit(defaults.min_match, "min_match", min_match)
    names = tuple(dict.fromkeys(x.strip() for x in str(labels).split(",") if x.strip())) if labels else ()
    if len(names) > MAX_LABELS or any(len(n) > MAX_LABEL_CHARS for n in names):
        raise ApiError(422, f"labels: at most {MAX_LABELS} labels of at most {MAX_LABEL_CHARS} characters each")
    if labels and not names:
        raise ApiError(422, "labels: give at least one label, comma-separated")
    return LabelOptions(LabelSettings(k, conf, defaults.batch_size, match), names)


def _unit(default: float, name: str, value) -> float:
    number = default if value in (None, "") else _number(float, name, value)
    if not 0.0 <= number <= 1.0:
        raise ApiError(422, f"{name} must be between 0 and 1, got {number}")
    return number


def _number(kind, name: str, text):
    try:
        value = kind(text)
        if kind is int and isinstance(text, float) and value != text:
            raise ValueError(text)
        return value
    except (TypeError, ValueError, OverflowError):
        raise ApiError(422, f"{name} must be a number, got {str(text)[:40]!r}") from None
