"""Cutting items into shards (the unit of work) and shards into batches (what a worker holds at once)."""

from __future__ import annotations

import math

from pydantic import ByteSize, Field

from .settings import Strict


class ShardConfig(Strict):
    """How work is cut. A shard is the unit of work, retry and resume (one task per step and shard);
    a batch is what a worker holds in memory at once. Both are bounded by items and by bytes
    ("256MB", "1GiB" or a number). Shards are also cut small enough that every worker gets one."""

    max_items: int = Field(2000, ge=1, le=1_000_000)
    max_bytes: ByteSize = Field(ByteSize(256 * 2**20), gt=0)
    batch_items: int = Field(256, ge=1, le=100_000)
    batch_bytes: ByteSize = Field(ByteSize(64 * 2**20), gt=0)


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
