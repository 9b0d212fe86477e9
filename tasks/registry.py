"""Stage names -> classes, so work can name a stage in plain data (a Prefect parameter, a marker file).
A new per-item stage: its class here, and a line in a step of tasks/pipeline.py."""

from __future__ import annotations

from .align import AlignStage
from .clean import CleanStage
from .collect import CollectStage
from .dedupe import DedupeStage
from .documents import DocumentStage
from .filter import FilterStage
from .score import ScoreStage
from .split import SplitStage
from .stage import Stage

STAGES: dict[str, type[Stage]] = {
    s.name: s
    for s in (CollectStage, CleanStage, DedupeStage, FilterStage, ScoreStage, AlignStage, DocumentStage, SplitStage)
}


def stage_class(name: str) -> type[Stage]:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"no stage named {name!r}; known: {', '.join(sorted(STAGES))}") from None
