"""The recipe's `dedupe:`: which items are copies, and which of a cluster stays."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ...core.settings import Strict
from ...similar.search import CopySearch


class CaptionDedupeConfig(Strict):
    """Items whose captions are near copies of each other's: one group (a caption seen in training must
    not be a test caption), reported per source, and dropped for the sources listed in `drop`."""

    # Jaccard similarity of the word 3-shingle sets at or above which two captions are one; null: off
    threshold: float | None = Field(0.8, gt=0, le=1)
    drop: tuple[str, ...] = ()  # sources whose items are rejects (duplicate:caption) when another is kept
    # a caption (or cluster of near-identical ones) on this many items is boilerplate ("image", "stock
    # photo"): flagged in the report, never used to group or drop
    boilerplate_items: int = Field(50, ge=2)


class DedupeConfig(CopySearch):
    """Which items are copies of one another (the thresholds: tasks/similar/search.py). Copies form clusters;
    one member is kept, the others are rejects naming it, and the whole cluster is one group, so no copy can
    sit in another split."""

    captions: CaptionDedupeConfig = CaptionDedupeConfig()
    # which member of a cluster stays: `best` (most pixels, or samples a second and channels; then the
    # least edited; then one published as it came; then the most bytes for its size), `largest`,
    # `longest`, `earliest`
    keep: Literal["best", "largest", "longest", "earliest"] = "best"
    prefer_sources: tuple[str, ...] = ()  # a copy from these sources (in this order) stays, whatever the policy
    merge_texts: bool = True  # the copies' texts join the kept item
    # copies of items other partitions published are rejects (duplicate:published): building the same
    # source again as a new partition publishes nothing new
    against_published: bool = True
