"""Stage names -> classes, so work can name a stage in plain data (a Prefect parameter, a marker file).
A new per-item stage: its class here, and a line in a step of tasks/build/pipeline.py."""

from __future__ import annotations

from ..stages.align import AlignStage
from ..stages.clean import CleanStage
from ..stages.collect import CollectStage
from ..stages.dedupe import DedupeStage
from ..stages.documents import DocumentStage
from ..stages.filter import FilterStage
from ..stages.score import ScoreStage
from ..stages.split import SplitStage
from ..stages.stage import Stage

STAGES: dict[str, type[Stage]] = {
    s.name: s
    for s in (CollectStage, CleanStage, DedupeStage, FilterStage, ScoreStage, AlignStage, DocumentStage, SplitStage)
}


def stage_class(name: str) -> type[Stage]:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"no stage named {name!r}; known: {', '.join(sorted(STAGES))}") from None
