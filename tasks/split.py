"""Split: train/val/test by group, stratified, and stable across every version of a dataset.

`assign_splits` is the global decision, over all shards:

- a group that any version of the dataset has published keeps the split it was published in
  (`published`: the group -> split table of tasks/dedupe_index.py, updated as each version commits),
  so a speaker, a video or a cluster that returns in a later partition, or in an older one built
  later, never lands in another split;
- new groups are dealt out per stratum (`split.stratify`, by default modality and source: a group
  belongs to the stratum most of its items are in). In a salted-hash order of their ids, each goes
  to the split furthest below its share of the stratum so far, counting items, the returning groups
  included; a stratum of 10 groups or more gets at least one group in every split.

The order is the hash's, so the assignment depends only on the set of items and the published table,
not on shard order or worker count; dealing by deficit keeps each stratum's shares within one group
of `split.ratios`.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

import pyarrow as pa

from . import storage
from .recipe import SplitConfig, Strict
from .redact import redact_text
from .schema import SPLITS
from .stage import RowStage

ASSIGNMENT_SCHEMA = pa.schema(
    [("group_id", pa.string()), ("split", pa.string()), ("stratum", pa.string()), ("published", pa.bool_())]
)
MIN_GROUPS_FOR_EVERY_SPLIT = 10


def group_hash(group_id: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}\x1f{group_id}".encode()).hexdigest()


def stratum_of(row: dict, stratify: tuple[str, ...]) -> str:
    return "/".join(str(row[key]) for key in stratify) if stratify else "all"


def assign_splits(
    shard_uris: list[str], config: SplitConfig, out_uri: str, published: dict[str, str] | None = None
) -> dict:
    """Write group -> split for every group of these shards to `out_uri`. `published`: the splits that
    versions already gave groups (redacted group id -> split, as the published index holds them)."""
    if storage.exists(out_uri):
        return {"uri": out_uri}
    published = published or {}
    columns = ["group_id", *config.stratify]
    rows = [r for u in shard_uris for r in storage.read_parquet(u, columns=columns).to_pylist()]
    sizes: Counter[str] = Counter(r["group_id"] for r in rows)
    strata_of: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        strata_of[r["group_id"]][stratum_of(r, config.stratify)] += 1
    # a group's stratum: where most of its items are (ties: the first name)
    stratum = {g: min(c, key=lambda s: (-c[s], s)) for g, c in strata_of.items()}
    # published tables name groups as published (redacted); a first build has none to look up
    returning = {g: known for g in sizes if (known := published.get(redact_text(g))) is not None} if published else {}
    split: dict[str, str] = dict(returning)
    members: dict[str, list[str]] = defaultdict(list)
    for g in sorted(sizes):
        members[stratum[g]].append(g)
    for groups in members.values():
        split.update(_deal(groups, sizes, split, config))
    order = sorted(sizes)
    table = pa.table(
        {
            "group_id": order,
            "split": [split[g] for g in order],
            "stratum": [stratum[g] for g in order],
            "published": [g in returning for g in order],
        },
        schema=ASSIGNMENT_SCHEMA,
    )
    storage.write_parquet(out_uri, table)
    return {"uri": out_uri, "groups": len(order), "returning": sum(table.column("published").to_pylist())}


def _deal(groups: list[str], sizes: Counter, fixed: dict[str, str], config: SplitConfig) -> dict[str, str]:
    """The new groups of one stratum, each to the split furthest below its share once it is added."""
    have = Counter({s: 0 for s in SPLITS})
    for g in groups:
        if g in fixed:
            have[fixed[g]] += sizes[g]
    new = sorted((g for g in groups if g not in fixed), key=lambda g: group_hash(g, config.salt))
    dealt: dict[str, str] = {}
    for g in new:
        total = sum(have.values()) + sizes[g]
        chosen = max(SPLITS, key=lambda s: (ratio(config, s) * total - have[s], -SPLITS.index(s)))
        dealt[g] = chosen
        have[chosen] += sizes[g]
    if len(groups) >= MIN_GROUPS_FOR_EVERY_SPLIT:
        _fill_empty_splits(groups, sizes, fixed, dealt, config)
    return dealt


def _fill_empty_splits(groups, sizes, fixed, dealt, config) -> None:
    """A split the stratum has no group in takes the smallest new group of the split with most groups."""
    for empty in SPLITS:
        where = {**fixed, **dealt}  # once, not per group: at 1M groups the per-group merge took hours
        placed = Counter(where[g] for g in groups)
        if ratio(config, empty) == 0 or placed[empty]:
            continue
        donor = max((s for s in SPLITS if placed[s] > 1), key=lambda s: placed[s], default=None)
        movable = [g for g in dealt if dealt[g] == donor]
        if movable:
            dealt[min(movable, key=lambda g: (sizes[g], group_hash(g, config.salt)))] = empty


def ratio(config: SplitConfig, split: str) -> float:
    return config.ratios[SPLITS.index(split)]


def shares_by_stratum(rows: list[dict], config: SplitConfig, tolerance: float = 0.02, min_items: int = 100) -> dict:
    """Per stratum: items per split, the achieved shares, and whether it is off target by more than
    `tolerance` in some split (judged only with at least `min_items` items)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        counts[stratum_of(r, config.stratify)][r["split"]] += 1
    report = {}
    for name, c in sorted(counts.items()):
        total = sum(c.values())
        shares = {s: round(c[s] / total, 4) for s in SPLITS}
        off = max(abs(shares[s] - ratio(config, s)) for s in SPLITS)
        report[name] = {
            "items": {s: c[s] for s in SPLITS},
            "shares": shares,
            "max_off": round(off, 4),
            "flagged": total >= min_items and off > tolerance,
        }
    return report


class ApplySplit(Strict):
    assignment_uri: str  # what assign_splits wrote


class SplitStage(RowStage):
    name = "split"
    Config = ApplySplit

    def setup(self) -> None:
        table = storage.read_parquet(self.config.assignment_uri, columns=["group_id", "split"])
        self.assignment = dict(zip(table.column("group_id").to_pylist(), table.column("split").to_pylist()))

    def check(self, row: dict):
        return {**row, "split": self.assignment[row["group_id"]]}
