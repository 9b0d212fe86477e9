"""Dedupe: identical media becomes one item with the union of its texts; copies never straddle splits.

Global step in three phases. Signatures are the cleaned shards' own columns (sha256 of the
normalized bytes), read by projection. `decide_duplicates` makes one decision over all shards: of
the items with the same bytes, whichever file or source they came from, the smallest sample_id is
kept and the others are `duplicate:exact` rejects naming it; their texts join the kept item, and
their groups join its group. `DedupeStage` applies it. The decision lists only the items it changes,
so it stays small when duplicates are rare. Perceptual hashes are recorded by clean; near-duplicate
clustering on them is a later stage.
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc

from . import storage
from .groups import UnionFind
from .media.text import unique_texts
from .schema import TEXT
from .stage import Reject, RowStage

DECISION_SCHEMA = pa.schema([("sample_id", pa.string()), ("group_id", pa.string()), ("duplicate_of", pa.string()),
                             ("merged_texts", pa.list_(TEXT))])


def decide_duplicates(shard_uris: list[str], out_uri: str) -> dict:
    if storage.exists(out_uri):
        return {"uri": out_uri}
    columns = ["sample_id", "group_id", "sha256"]
    signatures = pa.concat_tables([storage.read_parquet(u, columns=columns) for u in shard_uris]).sort_by("sample_id")

    groups = UnionFind()
    kept_for: dict[str, str] = {}  # sha256 -> the item kept for it
    duplicate_of: dict[str, str] = {}
    for sample_id, group_id, sha in zip(*(signatures.column(c).to_pylist() for c in columns)):
        groups.union(group_id, "sha256:" + sha)
        kept = kept_for.setdefault(sha, sample_id)
        if kept != sample_id:
            duplicate_of[sample_id] = kept

    # the copies' texts go to the kept item; read only for the copies
    copies: dict[str, list[dict]] = {}
    wanted = pa.array(sorted(duplicate_of), pa.string())
    for uri in shard_uris:
        table = storage.read_parquet(uri, columns=["sample_id", "texts"])
        for row in table.filter(pc.is_in(table.column("sample_id"), wanted)).to_pylist():
            copies[row["sample_id"]] = row["texts"] or []
    merged: dict[str, list[dict]] = defaultdict(list)
    for copy in sorted(copies):  # in id order, whatever the shards' order
        merged[duplicate_of[copy]].extend(copies[copy])

    decisions = []
    for sample_id, group_id in zip(signatures.column("sample_id").to_pylist(), signatures.column("group_id").to_pylist()):
        new_group = groups.find(group_id).removeprefix("sha256:")
        if new_group != group_id or sample_id in duplicate_of or sample_id in merged:
            decisions.append({"sample_id": sample_id, "group_id": new_group,
                              "duplicate_of": duplicate_of.get(sample_id), "merged_texts": merged.get(sample_id)})
    storage.write_parquet(out_uri, pa.Table.from_pylist(decisions, schema=DECISION_SCHEMA))
    return {"uri": out_uri, "duplicates": len(duplicate_of)}


class DedupeStage(RowStage):
    name = "dedupe"

    def __init__(self, decision_uri: str):
        super().__init__(decision_uri=decision_uri)
        self.decision_uri = decision_uri

    def setup(self) -> None:
        self.decisions = {r["sample_id"]: r for r in storage.read_parquet(self.decision_uri).to_pylist()}

    def check(self, row: dict):
        decision = self.decisions.get(row["sample_id"])
        if decision is None:
            return row
        if decision["duplicate_of"] is not None:
            return Reject("duplicate:exact", f"same media bytes as {decision['duplicate_of']}",
                          duplicate_of=decision["duplicate_of"])
        texts, repeated = unique_texts((row["texts"] or []) + (decision["merged_texts"] or []))
        for text, reason in repeated:
            self.drop_text(row, text, reason, "merged from an identical copy")
        return {**row, "texts": texts, "group_id": decision["group_id"]}
