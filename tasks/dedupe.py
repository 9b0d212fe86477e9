"""Dedupe: exact duplicates by content, and groups that keep every copy of one item together.

Global step in three phases. Signatures are the clean shards' own columns (sha256, caption), read
by projection. `decide_duplicates` makes one decision over all shards: a sample whose media bytes
and caption both repeat an earlier one (smallest sample_id wins) is a `duplicate:exact`; every
sample sharing media bytes with another joins one group (several captions of one picture, the same
file under two names), so the split can never put copies on both sides. `DedupeStage` applies it.
Perceptual hashes are recorded by clean; near-duplicate clustering on them is a later stage.
"""

from __future__ import annotations

import pyarrow as pa

from . import storage
from .media.text import dedupe_key
from .stage import Reject, RowStage

DECISION_SCHEMA = pa.schema([("sample_id", pa.string()), ("group_id", pa.string()), ("duplicate_of", pa.string())])


class _UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller id is the root, so the result does not depend on order
            self.parent[max(ra, rb)] = min(ra, rb)


def decide_duplicates(shard_uris: list[str], out_uri: str) -> dict:
    if storage.exists(out_uri):
        return {"uri": out_uri}
    columns = ["sample_id", "group_id", "sha256", "text"]
    table = pa.concat_tables([storage.read_parquet(u, columns=columns) for u in shard_uris]) if shard_uris else None
    rows = sorted(table.to_pylist(), key=lambda r: r["sample_id"]) if table is not None else []

    groups = _UnionFind()
    first_with_content: dict[str, str] = {}
    first_with_pair: dict[tuple[str, str], str] = {}
    decisions = []
    for row in rows:
        groups.union(row["group_id"], "sha256:" + row["sha256"])
        pair = (row["sha256"], dedupe_key(row["text"]))
        first_with_content.setdefault(row["sha256"], row["sample_id"])
        duplicate_of = first_with_pair.setdefault(pair, row["sample_id"])
        decisions.append((row["sample_id"], row["group_id"], None if duplicate_of == row["sample_id"] else duplicate_of))

    table = pa.table(
        {
            "sample_id": [d[0] for d in decisions],
            "group_id": [_group_name(groups.find(d[1])) for d in decisions],
            "duplicate_of": [d[2] for d in decisions],
        },
        schema=DECISION_SCHEMA,
    )
    storage.write_parquet(out_uri, table)
    return {"uri": out_uri}


def _group_name(root: str) -> str:
    return root.removeprefix("sha256:")


class DedupeStage(RowStage):
    name = "dedupe"

    def __init__(self, decision_uri: str):
        super().__init__(decision_uri=decision_uri)
        self.decision_uri = decision_uri

    def setup(self) -> None:
        table = storage.read_parquet(self.decision_uri)
        self.decisions = {
            r["sample_id"]: (r["group_id"], r["duplicate_of"]) for r in table.to_pylist()
        }

    def check(self, row: dict):
        group_id, duplicate_of = self.decisions[row["sample_id"]]
        if duplicate_of is not None:
            return Reject("duplicate:exact", f"same media and caption as {duplicate_of}")
        return {**row, "group_id": group_id}
