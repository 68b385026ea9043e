"""The confidence-filtered sets of a job: the items kept and the items flagged, with the rule that flagged each."""

import dagster as dg

from cliplabel_pipeline.core.labelling.filtered import FilteredSets
from cliplabel_pipeline.core.pipeline import Labelled, filter_labelled
from cliplabel_pipeline.defs.assets.common import JOB_GROUP
from cliplabel_pipeline.defs.partitions import jobs_partitions

FLAGGED_ROWS = 200  # the flagged items listed in the metadata table; the counts hold them all


@dg.asset(partitions_def=jobs_partitions, kinds={"python"}, group_name=JOB_GROUP, io_manager_key="job_folder_io")
def job_confidence_filtered_sets(context: dg.AssetExecutionContext,
                                 job_label_assignments: Labelled) -> dg.Output[FilteredSets]:
    """The kept items (their label stands) and the flagged ones, each with the rules that flagged it:
    ``confidence``, ``match`` (below the thresholds of the run that labelled the job) or ``review`` (a person
    rejected it). Grouping groups the kept by label and clusters the flagged; cleanup quarantines the flagged.
    Written nowhere of its own: it is the split of ``labels.jsonl``, and follows it."""
    filtered = filter_labelled(job_label_assignments)
    prov = job_label_assignments.provenance
    return dg.Output(filtered, metadata={
        **{name: dg.MetadataValue.int(n) for name, n in filtered.counts.items()},
        "min_confidence": dg.MetadataValue.float(prov.min_confidence),
        "min_match": dg.MetadataValue.float(prov.min_match),
        "flagged_items": dg.MetadataValue.md(flagged_table(filtered)),
    })


def flagged_table(filtered: FilteredSets, limit: int = FLAGGED_ROWS) -> str:
    """The flagged items as a Markdown table, least confident first: path, top-1, confidence, match, rules."""
    if not filtered.flagged:
        return "none flagged"
    rows = sorted(filtered.flagged, key=lambda f: (f.record.confidence, f.path))
    lines = ["| item | top-1 | confidence | match | flagged by |", "|---|---|---|---|---|"]
    for f in rows[:limit]:
        r = f.record
        match = "" if r.match is None else f"{r.match:.3f}"
        lines.append(f"| `{_cell(r.path)}` | {_cell(r.top1)} | {r.confidence:.3f} | {match} | {', '.join(f.rules)} |")
    if len(rows) > limit:
        lines.append(f"| … {len(rows) - limit} more | | | | |")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")
