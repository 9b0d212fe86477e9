"""Split: train/val/test by group, deterministic, never splitting a group.

Groups are ordered by a salted hash of `group_id`, then cut where the running sample count crosses
the ratios. The hash decides the order, so the assignment depends only on the set of groups, not
on shard order or worker count; cutting on counts keeps ratios within one group of exact.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pyarrow as pa

from . import storage
from .recipe import SplitConfig, Strict
from .schema import SPLITS
from .stage import RowStage

ASSIGNMENT_SCHEMA = pa.schema([("group_id", pa.string()), ("split", pa.string())])


def group_hash(group_id: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}\x1f{group_id}".encode()).hexdigest()


def assign_splits(shard_uris: list[str], config: SplitConfig, out_uri: str) -> dict:
    if storage.exists(out_uri):
        return {"uri": out_uri}
    sizes: Counter[str] = Counter()
    for uri in shard_uris:
        sizes.update(storage.read_parquet(uri, columns=["group_id"]).column("group_id").to_pylist())
    total = sum(sizes.values())
    ratios = config.ratios
    bounds = [ratios[0] * total, (ratios[0] + ratios[1]) * total]
    groups, splits, seen = [], [], 0
    for group in sorted(sizes, key=lambda g: group_hash(g, config.salt)):
        # a group goes where its midpoint falls, so rounding errs both ways, not always up
        midpoint = seen + sizes[group] / 2
        split = SPLITS[0] if midpoint < bounds[0] else SPLITS[1] if midpoint < bounds[1] else SPLITS[2]
        groups.append(group)
        splits.append(split)
        seen += sizes[group]
    storage.write_parquet(out_uri, pa.table({"group_id": groups, "split": splits}, schema=ASSIGNMENT_SCHEMA))
    return {"uri": out_uri}


class ApplySplit(Strict):
    assignment_uri: str  # what assign_splits wrote


class SplitStage(RowStage):
    name = "split"
    Config = ApplySplit

    def setup(self) -> None:
        table = storage.read_parquet(self.config.assignment_uri)
        self.assignment = dict(zip(table.column("group_id").to_pylist(), table.column("split").to_pylist()))

    def check(self, row: dict):
        return {**row, "split": self.assignment[row["group_id"]]}
