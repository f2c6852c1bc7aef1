"""The main job: registry data in, classified store and landscape report out.

``run_pipeline`` ingests the given exports (or, with none, fetches the
maintained cell-therapy preset from the live ClinicalTrials.gov API), then
classifies the trials that changed, links trials to approved products, and
writes the report. Each step reports progress through the same callback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celltrials import sync
from celltrials.ingest import IngestReport, ingest_paths
from celltrials.labelling import classify_store
from celltrials.products import link_products
from celltrials.progress import Progress, ProgressEvent
from celltrials.report.build import build_report
from celltrials.store import Store


@dataclass
class PipelineResult:
    ingest: IngestReport | None = None
    steps: dict[str, Any] = field(default_factory=dict)
    report_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ingest": self.ingest.to_dict() if self.ingest else None,
            "steps": self.steps,
            "report": str(self.report_path) if self.report_path else None,
        }


def run_pipeline(
    store: Store,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    skip_bad: bool = False,
    progress: Progress | None = None,
    base_url: str | None = None,
    filters: Any = None,
) -> PipelineResult:
    """ingest (or fetch) → classify → link products → report."""

    def step(name: str) -> None:
        if progress:
            progress(ProgressEvent("pipeline", "step", name, message=name))

    result = PipelineResult()
    if paths:
        step("ingest")
        result.ingest = ingest_paths(store, paths, skip_bad=skip_bad, progress=progress)
    else:
        step("fetch")
        result.steps["fetch"] = sync.fetch_preset(
            store, "cell-therapy", base_url=base_url, progress=progress
        )
    step("classify")
    summary = classify_store(store, only_changed=True, progress=progress)
    result.steps["classify"] = {
        k: summary[k]
        for k in (
            "trials",
            "classified",
            "skipped_unchanged",
            "cell_therapy_trials",
            "taxonomy_version",
        )
        if k in summary
    }
    step("link products")
    links = link_products(store)
    result.steps["products"] = {
        "links": len(links),
        "trials": int(links["trial_id"].nunique()) if len(links) else 0,
    }
    step("report")
    report = build_report(store, out_dir, filters, progress=progress)
    result.steps["report"] = {
        "trials": report.n_trials,
        "figures": len(report.figures),
        "tables": len(report.tables),
    }
    result.report_path = report.html
    return result
