"""The guard before a version commits: no val or test item may lie within the dedupe thresholds of a
train item of this version or of an earlier one (same bytes, pHash radius, Chromaprint bit error rate,
video keyframes: the pairs dedupe finds, tasks/dedupe.find_pairs).

Dedupe makes such a pair impossible (copies become one item, and copies of published items are
rejected), so a hit means a bug or a recipe that turned that protection off (`dedupe.against_published:
false`, a threshold set to null after versions were published): the build fails, naming the pairs.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from . import storage
from .dedupe import find_pairs
from .dedupe_index import PublishedIndex
from .media.kinds import SIGNATURE_COLUMNS
from .recipe import DedupeConfig
from .similar.signatures import Signatures

COLUMNS = ["sample_id", "split", "modality", "sha256", *SIGNATURE_COLUMNS]
SHOWN = 5  # pairs named in the error


class Leakage(RuntimeError):
    """A val or test item is a copy of a train item, or a group is in another split than published."""


def check_group_splits(published: dict[str, str], ours: list[pa.Table], work: str) -> None:
    """No group in another split than a version published it in: a build of another partition that
    committed after this one drew its splits (two builds at once) may have published a group new to both."""
    moved = sorted(
        {(g, s, published[g]) for t in ours for g, s in zip(t["group_id"].to_pylist(), t["split"].to_pylist())
         if published.get(g, s) != s}
    )  # fmt: skip
    if moved:
        shown = "; ".join(f"{g}: {s} here, {p} as published" for g, s, p in moved[:SHOWN])
        raise Leakage(
            f"{len(moved)} groups would be published in another split than a version already gave them ({shown})."
            " Another partition's build committed them while this one ran: delete this build's work folder"
            f" ({work}) and build the partition again to draw its splits afresh"
        )


def check_leakage(layout: storage.Layout, index_uris: list[str], config: DedupeConfig, withdrawn_uri: str) -> dict:
    ours = [storage.read_parquet(u, columns=COLUMNS + ["group_id"]) for u in index_uris]
    index = PublishedIndex(layout.root, layout.dataset)
    check_group_splits(index.group_splits(), ours, layout.work)
    ours = pa.concat_tables([t.select(COLUMNS) for t in ours]) if ours else None
    published = index.items(except_partition=layout.partition)
    withdrawn = storage.read_parquet(withdrawn_uri) if storage.exists(withdrawn_uri) else pa.table({"sample_id": []})
    if withdrawn.num_rows:  # what this build withdraws is no longer published
        keys = pc.binary_join_element_wise(published.column("partition"), published.column("sample_id"), "/")
        gone = pc.binary_join_element_wise(withdrawn.column("partition"), withdrawn.column("sample_id"), "/")
        published = published.filter(pc.invert(pc.is_in(keys, gone)))
    published = published.filter(pc.is_valid(published.column("split")))  # versions before splits were recorded
    tables = [published.select(COLUMNS).append_column("key", _keys(published.column("partition"), published))]
    if ours is not None:
        tables.insert(0, ours.append_column("key", _keys(pa.repeat(layout.partition, ours.num_rows), ours)))
    items = Signatures(*tables)
    pairs = sorted(find_pairs(items, config).items())
    split = {k: r["split"] for k, r in items.rows((x for (a, b), _ in pairs for x in (a, b)), ["split"]).items()}
    leaks = []
    for (a, b), (reason, measured) in pairs:
        if "train" in {split[a], split[b]} and split[a] != split[b]:
            leaks.append(f"{a} ({split[a]}) ~ {b} ({split[b]}): {reason}, {measured}")
    if leaks:
        raise Leakage(
            f"{len(leaks)} val/test items lie within the dedupe thresholds of train items: "
            + "; ".join(leaks[:SHOWN])
            + (" ..." if len(leaks) > SHOWN else "")
            + ". Dedupe should have merged them: check dedupe.against_published and the thresholds"
        )
    return {"items_checked": len(items), "leaks": 0}


def _keys(partitions, table: pa.Table):
    """partition/sample_id: an id is unique within a partition only."""
    return pc.binary_join_element_wise(partitions, table.column("sample_id"), "/")
