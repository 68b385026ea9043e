"""A report a person reads: ``report/report.md`` with a confidence histogram, a confusion heat map and a
contact sheet of thumbnails per group, drawn with Pillow."""

from __future__ import annotations

import functools
import io
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cliplabel_pipeline.core.errors import CliplabelError
from cliplabel_pipeline.core.job_folder import SOURCE_NAME, JobFolder
from cliplabel_pipeline.core.reporting.metrics import JobMetrics
from cliplabel_pipeline.core.reading.images import ImageSkipped, crop_source_under_mask, load_rgb
from cliplabel_pipeline.core.storage.guarded import shown
from cliplabel_pipeline.core.values import Groups, LabelRecord
from cliplabel_pipeline.core.words import counted

THUMB = 72
MAX_GROUP_SHEETS = 24  # contact sheets of confident groups (the largest); more are listed: a report's cost is bounded


def score_histogram(values: list[float], threshold: float, name: str = "confidence", bins: int = 20) -> Image.Image:
    """A histogram of scores in [0, 1]; each bar split exactly at ``threshold``: the part below it (flagged)
    in orange, the rest in blue, whatever bin the threshold falls in."""
    v = np.asarray(values, float)
    below, _ = np.histogram(v[v < threshold], bins=bins, range=(0, 1))
    above, _ = np.histogram(v[v >= threshold], bins=bins, range=(0, 1))
    w, h, pad = 420, 220, 30
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    top = max(int((below + above).max()), 1)
    bar, tall = (w - 2 * pad) / bins, h - 2 * pad
    for i in range(bins):
        x0, base = pad + i * bar, h - pad
        for count, colour in ((below[i], (200, 120, 60)), (above[i], (70, 130, 180))):
            if count:
                d.rectangle([x0 + 1, base - tall * count / top, x0 + bar - 1, base], fill=colour)
                base -= tall * count / top
    tx = pad + (w - 2 * pad) * threshold
    d.line([tx, pad - 10, tx, h - pad], fill="red", width=2)
    d.line([pad, h - pad, w - pad, h - pad], fill="black")
    d.text((pad, h - pad + 6), "0", fill="black")
    d.text((w - pad - 6, h - pad + 6), "1", fill="black")
    d.text((pad, 6), f"{name} (n={len(v)}, max bin {top}); red line = threshold {threshold}; orange = flagged",
           fill="black")
    return img


def confusion_heatmap(labels: list[str], matrix: list[list[int]]) -> Image.Image:
    """Rows are the ground truth, columns what was predicted; both axes titled, counts in the cells."""
    n = len(labels)
    cell, left, top, title = 22, 150, 150, 18
    img = Image.new("RGB", (max(left + n * cell + 10, left + 160), top + n * cell + 10), "white")
    d = ImageDraw.Draw(img)
    d.text((left, 4), "predicted label (columns)", fill="black")
    side = Image.new("RGB", (n * cell, title), "white")
    ImageDraw.Draw(side).text((2, 3), "true label (rows)", fill="black")
    img.paste(side.rotate(90, expand=True), (2, top))
    m = np.asarray(matrix, float)
    peak = m.max() or 1.0
    for i in range(n):
        d.text((title + 4, top + i * cell + 5), labels[i][:20], fill="black")
        col = Image.new("RGB", (top - title, cell), "white")
        ImageDraw.Draw(col).text((4, 5), labels[i][:20], fill="black")
        img.paste(col.rotate(90, expand=True), (left + i * cell, title))
        for j in range(n):
            v = m[i, j] / peak
            colour = (int(255 - 200 * v), int(255 - 120 * v), 255) if i == j else (255, int(255 - 200 * v), int(255 - 200 * v))
            d.rectangle([left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1], fill=colour)
            if m[i, j]:
                d.text((left + j * cell + 4, top + i * cell + 5), str(int(m[i, j])), fill="black")
    return img


def preview(job: JobFolder, item: str, kind: str, source: Callable[[], Image.Image]) -> Image.Image:
    """What the model saw: a mask shows the region of ``source()`` under it, not its silhouette."""
    if kind == "mask":
        with _open(job, item) as fh:
            return crop_source_under_mask(source(), fh)[0]
    with _open(job, item) as fh:
        return load_rgb(fh)[0]


def _open(job: JobFolder, item: str):
    """The item as a regular file inside the job (never through a link), or ``ImageSkipped``."""
    try:
        return job.open_item(item)
    except CliplabelError as exc:
        raise ImageSkipped(str(exc)) from None


LINE = 12  # pixels a caption line takes (Pillow's default font)
CAPTION = 3 * LINE + 6  # at least three lines under each thumbnail: the path (folder, file), then label and score
# (more when they wrap)
CHARS = 15  # characters a caption line holds under a thumbnail: longer text wraps, never cut


def contact_sheet(job: JobFolder, items: list[str], kinds: dict[str, str], source: Callable[[], Image.Image],
                  captions: dict[str, str] | None = None, per_row: int = 8, limit: int = 32) -> Image.Image:
    """Thumbnails of up to ``limit`` items in a grid, each captioned (its path in the job, so a mask and its
    cut-out of the same name are told apart, then ``captions[item]``), and a last line saying how many more the
    group holds."""
    shown_items, more = items[:limit], max(0, len(items) - limit)
    texts = [(_wrapped_path(item), _wrapped((captions or {}).get(item, ""))) for item in shown_items]
    lines = max((len(name) + len(caption) for name, caption in texts), default=2)
    cell_w, cell_h = THUMB + 24, THUMB + max(CAPTION, LINE * lines + 6)
    rows = max(1, -(-len(shown_items) // per_row))
    footer = 16 if more else 0
    sheet = Image.new("RGB", (per_row * cell_w, rows * cell_h + footer), (235, 235, 235))
    d = ImageDraw.Draw(sheet)
    for i, item in enumerate(shown_items):
        x, y = (i % per_row) * cell_w, (i // per_row) * cell_h
        try:
            img = preview(job, item, kinds.get(item, "object"), source)
            img.thumbnail((THUMB - 4, THUMB - 4))
            sheet.paste(img, (x + (cell_w - img.width) // 2, y + 2))
        except ImageSkipped:
            d.text((x + 4, y + THUMB // 2), "(unreadable)", fill="black")
        name, caption = texts[i]
        for j, line in enumerate(name + caption):
            d.text((x + 2, y + THUMB + 1 + LINE * j), line, fill="black" if j < len(name) else (60, 60, 60))
    if more:
        d.text((4, rows * cell_h + 2), f"+{more} more (every item is in labels.jsonl and the ZIP)", fill="black")
    return sheet


def _flagging_scores(r: LabelRecord) -> str:
    """The score of each rule that flagged ``r`` ("match 0.43", "conf 0.20"): what put it in a flagged group."""
    scores = {"confidence": f"conf {r.confidence:.2f}", "match": f"match {r.match:.2f}" if r.match is not None else ""}
    shown_scores = [scores[rule] for rule in r.flagged_by if scores.get(rule)]
    return ", ".join(shown_scores) or f"conf {r.confidence:.2f}"


def _wrapped(text: str) -> list[str]:
    """``text`` in lines of ``CHARS`` characters, broken between words where it can: wrapped, never cut."""
    return textwrap.wrap(shown(text), CHARS, break_on_hyphens=False) if text else []


def _wrapped_path(path: str) -> list[str]:
    """``path`` in lines of ``CHARS`` characters, broken after a ``/`` ("masks/", "obj_00.png"), a part longer
    than a line wrapped as ``_wrapped`` does: every character kept."""
    lines: list[str] = []
    for part in re.findall(r"[^/]*/|[^/]+", shown(path)):
        if lines and len(lines[-1]) + len(part) <= CHARS:
            lines[-1] += part
        else:
            lines += textwrap.wrap(part, CHARS, break_on_hyphens=False)
    return lines


def _save(job: JobFolder, path: Path, img: Image.Image) -> Path:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return job.write(path, buf.getvalue())


def _source(job: JobFolder) -> Image.Image:
    with _open(job, SOURCE_NAME) as fh:
        return load_rgb(fh)[0]


def tradeoff_chart(points: list[dict], min_match: float) -> Image.Image:
    """Precision (blue) and the share of reviewed items kept (orange) as ``min_confidence`` moves, at
    ``min_match``."""
    row = sorted((p for p in points if abs(p["min_match"] - min_match) < 1e-9), key=lambda p: p["min_confidence"])
    w, h, pad = 420, 220, 30
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([pad, pad, w - pad, h - pad], outline="black")
    for key, colour in (("precision", (70, 130, 180)), ("kept_share", (200, 120, 60))):
        xy = [(pad + (w - 2 * pad) * p["min_confidence"], h - pad - (h - 2 * pad) * p[key])
              for p in row if p[key] is not None]
        if len(xy) > 1:
            d.line(xy, fill=colour, width=2)
    d.text((pad, 6), f"blue: precision, orange: share kept; min_match {min_match}", fill="black")
    d.text((pad, h - pad + 6), "min_confidence 0", fill="black")
    d.text((w - pad - 20, h - pad + 6), "0.95", fill="black")
    return img


def _review_section(job: JobFolder, folder: Path, metrics: JobMetrics) -> list[str]:
    r = metrics.review
    top_k = f", top-k {100 * r.top_k_accuracy:.1f}%" if r.top_k_accuracy is not None else ""
    lines = ["## Reviews", "",
             f"**Accuracy {100 * r.accuracy:.1f}%**{top_k} on {counted(r.reviewed, 'item')} people reviewed "
             f"({r.decisions['accept']} accepted, {r.decisions['correct']} corrected, {r.decisions['reject']} "
             f"rejected).", ""]
    lines += [f"- {kind}: {v['reviewed']} reviewed, accuracy {100 * v['accuracy']:.1f}%" for kind, v in r.by_kind.items()]
    match = metrics.match_threshold if metrics.match_threshold is not None else 0.0
    _save(job, folder / "review_tradeoff.png", tradeoff_chart(r.tradeoff, round(round(match / 0.05) * 0.05, 2)))
    lines += ["", "![precision and share kept as min_confidence moves](review_tradeoff.png)", ""]
    if r.suggested:
        s = r.suggested
        lines += [f"To keep precision at or above {100 * r.precision_target:.0f}% on these items: "
                  f"`--min-confidence {s['min_confidence']} --min-match {s['min_match']}` (keeps "
                  f"{100 * s['kept_share']:.0f}% of them, precision {100 * s['precision']:.1f}%).", ""]
    else:
        lines += [f"No thresholds keep precision at {100 * r.precision_target:.0f}% on these items.", ""]
    return lines


def write_report(job: JobFolder, records: list[LabelRecord], metrics: JobMetrics, groups: Groups) -> Path:
    """Write ``report/report.md`` and its PNG pictures; returns the Markdown file."""
    folder = job.report_dir
    kinds = {r.path: r.kind for r in records}
    captions = {r.path: f"{r.top1} {r.confidence:.2f}" for r in records}
    flagged_captions = {r.path: f"{r.top1} {_flagging_scores(r)}" for r in records}
    source = functools.cache(lambda: _source(job))  # decoded once, if a mask needs it
    threshold = metrics.threshold
    scores = metrics.scores
    lines = [f"# Labelling report: {job.id}", "",
             f"{metrics.items} items labelled: {scores.headline()}; {scores.distinct_labels} distinct labels.", ""]
    if metrics.truth and metrics.truth.accuracy is not None:
        t = metrics.truth
        lines += [f"**Accuracy {100 * t.accuracy:.1f}%** (top-k {100 * t.top_k_accuracy:.1f}%) on "
                  f"{t.evaluated} items with ground truth.", "",
                  "![confusion matrix](confusion.png)", ""]
        _save(job, folder / "confusion.png", confusion_heatmap(t.confusion_labels, t.confusion_matrix))
    _save(job, folder / "confidence.png", score_histogram([r.confidence for r in records], threshold))
    c = scores.confidence
    lines += ["## Confidence", "", "![confidence histogram](confidence.png)", "",
              f"mean {c.get('mean', 0):.3f}, std {c.get('std', 0):.3f}, median {c.get('p50', 0):.3f}", ""]
    matches = [r.match for r in records if r.match is not None]
    if matches and metrics.match_threshold is not None:
        _save(job, folder / "match.png", score_histogram(matches, metrics.match_threshold, "match"))
        m = scores.match
        lines += ["## Match (open set)", "", "![match histogram](match.png)", "",
                  f"mean {m.get('mean', 0):.3f}, median {m.get('p50', 0):.3f}; "
                  f"{counted(scores.flagged, 'item')} flagged, {scores.flagged_by['match']} of them by match", ""]
    lines += ["## Groups", ""]
    pictured = {id(g) for g in sorted(groups.groups, key=lambda g: -len(g.items))[:MAX_GROUP_SHEETS]}
    unpictured = []
    for i, g in enumerate(groups.all()):
        confident = i < len(groups.groups)
        if confident and id(g) not in pictured:
            unpictured.append(f"{shown(g.name)} ({len(g.items)})")
            continue
        name = g.name if confident else f"flagged, nearest concept: {g.name}"  # flagged by any rule, not only confidence
        sheet = _save(job, folder / f"group_{i:02d}.png", contact_sheet(
            job, g.items, kinds, source, captions if confident else flagged_captions))
        lines += [f"### {name} ({len(g.items)})", "", f"![{name}]({sheet.name})", ""]
    if unpictured:
        lines += [f"### {len(unpictured)} more groups, without pictures", "",
                  f"The {MAX_GROUP_SHEETS} largest groups and every cluster of flagged items are pictured above; "
                  f"these are in `groups.json`, `labels.csv` and the ZIP: " + ", ".join(unpictured) + ".", ""]
    if metrics.review:
        lines += _review_section(job, folder, metrics)
    perf = metrics.performance
    lines += ["## Performance", "", f"{perf.items_per_s:.1f} items/s over {perf.seconds:.2f}s"]
    job.write(job.report_md, ("\n".join(lines) + "\n").encode("utf-8"))
    return job.report_md
