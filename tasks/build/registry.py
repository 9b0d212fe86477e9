"""Stage names -> classes, so work can name a stage in plain data (a Prefect parameter, a marker file).
A new per-item stage: its class here, and a line in a step of tasks/build/pipeline.py."""

from __future__ import annotations

from ..stages.align import AlignStage
from ..stages.blocklist import BlocklistStage
from ..stages.caption import CaptionStage
from ..stages.clean import CleanStage
from ..stages.collect import CollectStage
from ..stages.dedupe import DedupeStage
from ..stages.dedupe.semantic import SemanticStage
from ..stages.documents import DocumentStage
from ..stages.filter import FilterStage
from ..stages.plan_rows import PLANNED
from ..stages.scenes import ScenesStage
from ..stages.score import ScoreStage
from ..stages.split import SplitStage
from ..stages.stage import Stage
from ..stages.transcribe import TranscribeStage

STAGES: dict[str, type[Stage]] = {
    s.name: s
    for s in (
        CollectStage,
        ScenesStage,
        CleanStage,
        BlocklistStage,
        DedupeStage,
        TranscribeStage,
        CaptionStage,
        FilterStage,
        ScoreStage,
        AlignStage,
        SemanticStage,
        DocumentStage,
        SplitStage,
    )  # fmt: skip
}


def stage_class(name: str) -> type[Stage]:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"no stage named {name!r}; known: {', '.join(sorted(STAGES))}") from None


class OrderError(ValueError):
    """Stages in an order they cannot run in: one reads a column that nothing before it writes."""


def check_order(names: list[str], given: frozenset[str] = PLANNED) -> None:
    """Refuse stages (in the order they run) where one reads a column that neither the plan (`given`)
    nor a stage before it writes, naming the stage, the column and what writes it."""
    filled = set(given)
    for name in names:
        stage = stage_class(name)
        for column in sorted(stage.reads - filled):
            writers = [s.name for s in STAGES.values() if column in s.writes]
            raise OrderError(
                f"stage {name} reads column {column}, which no stage before it writes "
                f"(written by: {', '.join(writers) or 'no stage'}); order: {' -> '.join(names)}"
            )
        filled |= stage.writes
