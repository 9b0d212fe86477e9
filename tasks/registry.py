"""Stage names -> classes, so work can name a stage in plain data (a Prefect parameter, a marker file)."""

from __future__ import annotations


def stage_class(name: str):
    from .align import AlignStage
    from .clean import CleanStage
    from .collect import CollectStage
    from .dedupe import DedupeStage
    from .filter import FilterStage
    from .split import SplitStage

    stages = {s.name: s for s in (CollectStage, CleanStage, DedupeStage, FilterStage, AlignStage, SplitStage)}
    try:
        return stages[name]
    except KeyError:
        raise KeyError(f"no stage named {name!r}; known: {', '.join(sorted(stages))}") from None
