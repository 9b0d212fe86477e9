"""Cutting items into shards (the unit of work) and shards into batches (what a worker holds at once)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the settings model lives with the recipe, above the core
    from ..recipe import ShardConfig


def bounded_ranges(sizes: list[int], max_items: int, max_bytes: int) -> list[tuple[int, int]]:
    """(start, end) ranges over items in order, each at most max_items long and max_bytes big (an
    item bigger than max_bytes alone in its range)."""
    ranges, start, held = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_items or held + size > max_bytes):
            ranges.append((start, i))
            start, held = i, 0
        held += size
    ranges.append((start, len(sizes)))
    return ranges


def cut_shards(sizes: list[int], config: ShardConfig, workers: int) -> list[tuple[int, int]]:
    """(start, end) ranges over items in order: bounded by items and bytes, and at least one per
    worker (a whole number of waves of `workers` shards) while there are items to go round."""
    n, total = len(sizes), sum(sizes)
    if n == 0:
        return [(0, 0)]
    count = max(math.ceil(n / config.max_items), math.ceil(total / config.max_bytes), 1)
    count = min(n, math.ceil(count / workers) * workers)
    return bounded_ranges(sizes, math.ceil(n / count), config.max_bytes)


def shard_name(uri: str) -> str:
    """A shard's name (`shard-00012`): what a step's outputs and a stage's `start_shard` call it."""
    return uri.rsplit("/", 1)[-1].removesuffix(".parquet")
