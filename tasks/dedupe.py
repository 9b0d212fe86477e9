"""Dedupe: copies of one picture or recording become one item with the union of their texts, and
copies never straddle splits.

Global step in three phases. Signatures are the cleaned shards' own columns, read by projection.
`decide_duplicates` makes one decision over all shards: items with identical normalized bytes
(sha256) and images whose perceptual hashes lie within `dedupe.image_radius` bits (tasks/similar.py)
are paired; pairs form clusters (union-find); in each cluster one member is kept by the recipe's
policy and the others are `duplicate:exact` or `duplicate:near` rejects naming it (and the distance);
their texts join the kept item, and their groups join its group. `DedupeStage` applies it. The
decision lists only the items it changes, so it stays small when duplicates are rare.
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc

from . import storage
from .groups import UnionFind
from .media.text import unique_texts
from .dedupe_index import WITHDRAWN_SCHEMA
from .schema import TEXT
from .similar import hamming_pairs
from .stage import Reject, RowStage

DECISION_SCHEMA = pa.schema([("sample_id", pa.string()), ("group_id", pa.string()), ("duplicate_of", pa.string()),
                             ("reason", pa.string()), ("detail", pa.string()), ("merged_texts", pa.list_(TEXT))])
SIGNATURES = ["sample_id", "group_id", "sha256", "phash", "modality", "width", "height", "duration_s", "partition",
              "source_rows"]


def keep_order(policy: str):
    """Sort key of a cluster's members: the first is kept. Ties fall to the smallest sample_id, so the
    choice never depends on shard order."""
    def pixels(item):
        return (item["width"] or 0) * (item["height"] or 0)

    def earliest(item):
        return (item["partition"] or "", min(item["source_rows"] or [0]))

    keys = {"largest": lambda i: (-pixels(i), -(i["duration_s"] or 0), i["sample_id"]),
            "longest": lambda i: (-(i["duration_s"] or 0), -pixels(i), i["sample_id"]),
            "earliest": lambda i: (*earliest(i), i["sample_id"])}
    return keys[policy]


def decide_duplicates(shard_uris: list[str], out_uri: str, image_radius: int | None = 8, keep: str = "largest",
                      merge_texts: bool = True, against_published: bool = True, published_uri: str | None = None,
                      partition: str = "") -> dict:
    """Decide over all shards (and, with `published_uri`, the other partitions' published items: see
    tasks/dedupe_index.py). Writes the decision to `out_uri` and the published items this partition
    withdraws (a backfill's older copies win) to `<out_uri>.withdrawn.parquet`."""
    withdrawn_uri = out_uri.removesuffix(".parquet") + ".withdrawn.parquet"
    if storage.exists(out_uri):
        return {"uri": out_uri, "withdrawn_uri": withdrawn_uri}
    table = pa.concat_tables([storage.read_parquet(u, columns=SIGNATURES) for u in shard_uris]).sort_by("sample_id")
    items = {row["sample_id"]: row for row in table.to_pylist()}
    published = {}
    if against_published and published_uri:
        # keyed apart from ours: the same file in another partition has the same sample_id
        published = {f"{r['partition']}/{r['sample_id']}": r for r in storage.read_parquet(published_uri).to_pylist()}
    candidates = {**items, **published}

    pairs = _exact_pairs(candidates)
    if image_radius is not None:
        images = [(key, int(i["phash"], 16)) for key, i in candidates.items() if i["modality"] == "image" and i["phash"]]
        pairs += [(a, b) for a, b, _ in hamming_pairs([k for k, _ in images], [h for _, h in images], image_radius)]
    clusters = UnionFind()
    for a, b in pairs:
        clusters.union(a, b)
    members: dict[str, list[str]] = defaultdict(list)
    for a, b in pairs:
        for x in (a, b):
            members[clusters.find(x)].append(x)

    order = keep_order(keep)
    groups = UnionFind()
    duplicate_of: dict[str, str] = {}
    reasons: dict[str, tuple[str, str]] = {}
    withdrawn = []
    for cluster in members.values():
        ours = sorted({x: items[x] for x in cluster if x in items}.values(), key=order)
        theirs = sorted({x: published[x] for x in cluster if x in published}.values(),
                        key=lambda i: (i["partition"], i["sample_id"]))
        if not ours:
            continue
        if theirs and theirs[0]["partition"] < partition:  # an earlier partition holds it: ours all go
            for copy in ours:
                duplicate_of[copy["sample_id"]] = theirs[0]["sample_id"]
                reasons[copy["sample_id"]] = ("duplicate:published", f"published in partition {theirs[0]['partition']}"
                                              f" as {theirs[0]['sample_id']}")
            continue
        kept, *copies = ours
        withdrawn += [{"sample_id": t["sample_id"], "partition": t["partition"], "withdrawn_by": kept["sample_id"]}
                      for t in theirs]  # later partitions' copies, built first: this one is older
        for copy in copies:
            duplicate_of[copy["sample_id"]] = kept["sample_id"]
            reasons[copy["sample_id"]] = _why(copy, kept)
            groups.union(copy["group_id"], kept["group_id"])

    within = {copy: kept for copy, kept in duplicate_of.items() if reasons[copy][0] != "duplicate:published"}
    merged = _merged_texts(shard_uris, within) if merge_texts else {}
    decisions = []
    for sample_id, item in items.items():
        new_group = groups.find(item["group_id"])
        if new_group != item["group_id"] or sample_id in duplicate_of or sample_id in merged:
            reason, detail = reasons.get(sample_id, (None, None))
            decisions.append({"sample_id": sample_id, "group_id": new_group, "duplicate_of": duplicate_of.get(sample_id),
                              "reason": reason, "detail": detail, "merged_texts": merged.get(sample_id)})
    storage.write_parquet(withdrawn_uri, pa.Table.from_pylist(withdrawn, schema=WITHDRAWN_SCHEMA))
    storage.write_parquet(out_uri, pa.Table.from_pylist(decisions, schema=DECISION_SCHEMA))  # the commit, last
    near = sum(1 for reason, _ in reasons.values() if reason == "duplicate:near")
    return {"uri": out_uri, "withdrawn_uri": withdrawn_uri, "duplicates": len(duplicate_of), "near_duplicates": near,
            "withdrawn": len(withdrawn)}


def _exact_pairs(items: dict[str, dict]) -> list[tuple[str, str]]:
    first: dict[str, str] = {}
    pairs = []
    for key, item in items.items():
        kept = first.setdefault(item["sha256"], key)
        if kept != key:
            pairs.append((kept, key))
    return pairs


def _why(copy: dict, kept: dict) -> tuple[str, str]:
    if copy["sha256"] == kept["sha256"]:
        return "duplicate:exact", f"same media bytes as {kept['sample_id']}"
    distance = bin(int(copy["phash"], 16) ^ int(kept["phash"], 16)).count("1")
    return "duplicate:near", f"pHash {distance} bits from {kept['sample_id']}"


def _merged_texts(shard_uris: list[str], duplicate_of: dict[str, str]) -> dict[str, list[dict]]:
    """The copies' texts, gathered for the items kept; read only for the copies, in id order."""
    copies: dict[str, list[dict]] = {}
    wanted = pa.array(sorted(duplicate_of), pa.string())
    for uri in shard_uris:
        table = storage.read_parquet(uri, columns=["sample_id", "texts"])
        for row in table.filter(pc.is_in(table.column("sample_id"), wanted)).to_pylist():
            copies[row["sample_id"]] = row["texts"] or []
    merged: dict[str, list[dict]] = defaultdict(list)
    for copy in sorted(copies):
        merged[duplicate_of[copy]].extend(copies[copy])
    return merged


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
            return Reject(decision["reason"], decision["detail"], duplicate_of=decision["duplicate_of"])
        texts, repeated = unique_texts((row["texts"] or []) + (decision["merged_texts"] or []))
        for text, reason in repeated:
            self.drop_text(row, text, reason, "merged from a copy")
        return {**row, "texts": texts, "group_id": decision["group_id"]}
