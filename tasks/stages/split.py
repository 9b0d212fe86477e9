"""Split: train/val/test by group, stratified, and stable across every version of a dataset.

`assign_splits` is the global decision, over all shards:

- a group that any version of the dataset has published keeps the split it was published in
  (`published`: the group -> split table of tasks/published/index.py, updated as each version commits),
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
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from ..core import storage
from ..core.committed import Record, committed
from ..core.redact import redact_text
from ..core.schema import SPLITS
from ..core.settings import Strict
from ..core.shards import shard_name
from .stage import RowStage


class LeakGuardConfig(Strict):
    """The leakage guard's own search, wider than dedupe's defaults so that it sees a copy dedupe's
    thresholds let through (each is widened further to dedupe's when that is wider); its sound candidates
    are verified on the waveform as dedupe's are (`dedupe.audio_min_similarity`)."""

    # pictures have no check on the pixels behind the hash, so their radius is dedupe's default: synthetic
    # pictures (the demo's shapes) lie 10-12 bits apart, and a wider guard would fail builds on them
    image_radius: int = Field(8, ge=0, le=16)
    # sounds are verified on the waveform, so their search can be wider than dedupe's
    audio_max_ber: float = Field(0.25, gt=0, lt=0.5)
    audio_min_landmarks: int = Field(3, ge=2)  # at most dedupe's
    short_audio_max_db: float = Field(6.0, gt=0, le=20)  # copies measured 2.7 dB apart at most
    video_radius: int = Field(8, ge=0, le=16)


class SplitConfig(Strict):
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test
    salt: str = "mmetl"  # change it to draw a different (still deterministic) split
    # new groups are dealt out per stratum, so that each modality and source has its own 8:1:1;
    # []: one stratum over everything
    stratify: tuple[Literal["modality", "source"], ...] = ("modality", "source")
    # a val or test item found a copy of a train item (of this or an earlier version) by the guard:
    # `fail` the build naming the pairs, or `move` the new group into its copy's split (a published
    # group never moves; a leak that only moving one would mend still fails)
    on_leak: Literal["fail", "move"] = "fail"
    guard: LeakGuardConfig = LeakGuardConfig()

    @model_validator(mode="after")
    def _sum_to_one(self):
        if abs(sum(self.ratios) - 1.0) > 1e-6 or min(self.ratios) < 0:
            raise ValueError(f"split.ratios must be non-negative and sum to 1, got {self.ratios}")
        return self


ASSIGNMENT_SCHEMA = pa.schema(
    [("group_id", pa.string()), ("split", pa.string()), ("stratum", pa.string()), ("published", pa.bool_())]
)
MIN_GROUPS_FOR_EVERY_SPLIT = 10


def stratum_of(row: dict, stratify: tuple[str, ...]) -> str:
    return "/".join(str(row[key]) for key in stratify) if stratify else "all"


@dataclass(frozen=True)
class SplitAssignment(Record):
    uri: str  # group -> split, every group (and per shard, beside it: `parts_folder`)
    groups: int
    returning: int  # groups a published version gave a split, which they keep


@committed(lambda out_uri, **_: out_uri + ".json", SplitAssignment)
def assign_splits(
    shard_uris: list[str], config: SplitConfig, out_uri: str, published: dict[str, str] | None = None
) -> SplitAssignment:
    """Write group -> split for every group of these shards to `out_uri`. `published`: the splits that
    versions already gave groups (redacted group id -> split, as the published index holds them).

    Groups are counted in Arrow and dealt from numpy arrays: at 10M items a dict per group would not fit
    a driver."""
    names, strata, stratum_of_group, sizes, groups_of_shard = _groups_by_stratum(shard_uris, config.stratify)
    split = np.full(len(names), -1, np.int8)  # index into SPLITS; -1: not dealt yet
    if published:  # published tables name groups as published (redacted); a first build has none to look up
        for start, chunk in _slices(names):
            for i, name in enumerate(chunk):
                known = published.get(redact_text(name))
                if known is not None:
                    split[start + i] = SPLITS.index(known)
    returning = split >= 0
    order = _hash_order(names, config.salt)
    codes = stratum_of_group[order]
    for code in range(len(strata)):
        _deal(order[codes == code], sizes, split, config)  # this stratum's groups, in hash order
    table = pa.table(
        {
            "group_id": names,
            "split": pa.array(SPLITS).take(pa.array(split)),
            "stratum": strata.take(pa.array(stratum_of_group)),
            "published": pa.array(returning),
        },
        schema=ASSIGNMENT_SCHEMA,
    )
    for uri, groups in zip(shard_uris, groups_of_shard):  # what each shard's split stage reads
        mine = pa.array(np.unique(groups))
        part = pa.table({"group_id": names.take(mine), "split": table.column("split").take(mine)})
        storage.write_parquet(storage.join(parts_folder(out_uri), f"{shard_name(uri)}.parquet"), part)
    storage.write_parquet(out_uri, table)
    return SplitAssignment(out_uri, len(table), int(returning.sum()))


def _groups_by_stratum(shard_uris: list[str], stratify: tuple[str, ...]):
    """Every group, sorted by id (an Arrow array); the strata by name; each group's stratum (where most
    of its items are; ties: the first name) and its number of items (numpy arrays); and per shard, the
    group (index) of each of its rows. Counted on integer codes: at 10M items, Arrow's group-by over
    the strings peaked at several times the columns."""
    groups, strata, rows = [], [], []
    for uri in shard_uris:
        table = storage.read_parquet(uri, columns=["group_id", *stratify])
        rows.append(table.num_rows)
        groups.append(table.column("group_id"))
        strata.append(
            pc.binary_join_element_wise(*(table.column(k) for k in stratify), "/")
            if stratify
            else pa.chunked_array([pa.repeat(pa.scalar("all"), len(table))])
        )
    group_codes, names = _codes(pa.chunked_array([c for g in groups for c in g.chunks], pa.string()))
    del groups
    stratum_codes, strata = _codes(pa.chunked_array([c for t in strata for c in t.chunks], pa.string()))
    pairs, counts = np.unique(group_codes.astype(np.int64) * len(strata) + stratum_codes, return_counts=True)
    group, stratum = pairs // max(len(strata), 1), pairs % max(len(strata), 1)
    first = np.lexsort((stratum, -counts, group))  # per group: its largest stratum first, ties by name
    leading = first[np.r_[True, group[first][1:] != group[first][:-1]]] if len(first) else first
    sizes = np.bincount(group_codes, minlength=len(names))
    return names, strata, stratum[leading], sizes, np.split(group_codes, np.cumsum(rows)[:-1])


def _codes(values: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Each value's code, and the distinct values sorted (code i names sorted value i)."""
    encoded = values.combine_chunks().dictionary_encode()
    rank = np.empty(len(encoded.dictionary), np.int64)
    by_name = pc.sort_indices(encoded.dictionary).to_numpy()
    rank[by_name] = np.arange(len(by_name))
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False)] if len(encoded) else np.zeros(0, np.int64)
    return codes, encoded.dictionary.take(pa.array(by_name))


def _slices(names: pa.Array, size: int = 1_000_000):
    """(start, the names as Python strings) a million at a time: 10M at once would cost a GB."""
    for start in range(0, len(names), size):
        yield start, names.slice(start, size).to_pylist()


def _hash_order(names: pa.Array, salt: str) -> np.ndarray:
    """Group indices in the order of their salted hashes (the first 8 bytes; ties in id order)."""
    prefix = b"".join(
        hashlib.sha256(f"{salt}\x1f{name}".encode()).digest()[:8] for _, chunk in _slices(names) for name in chunk
    )
    return np.argsort(np.frombuffer(prefix, ">u8"), kind="stable")


def _deal(members: np.ndarray, sizes: np.ndarray, split: np.ndarray, config: SplitConfig) -> None:
    """The new groups of one stratum (`members`, in hash order), each to the split furthest below its
    share once it is added; returning groups (already in `split`) count toward the shares."""
    have = [int(sizes[members[split[members] == s]].sum()) for s in range(len(SPLITS))]
    ratios = config.ratios
    new = members[split[members] < 0]
    chosen_of = np.empty(len(new), np.int8)
    for n, size in enumerate(sizes[new].tolist()):  # sequential: each choice depends on the ones before
        total = have[0] + have[1] + have[2] + size
        chosen, gap = 0, ratios[0] * total - have[0]
        for s in (1, 2):
            if ratios[s] * total - have[s] > gap:
                chosen, gap = s, ratios[s] * total - have[s]
        chosen_of[n] = chosen
        have[chosen] += size
    split[new] = chosen_of
    if len(members) >= MIN_GROUPS_FOR_EVERY_SPLIT:
        _fill_empty_splits(members, new, sizes, split, config)


def _fill_empty_splits(members, new, sizes, split, config) -> None:
    """A split the stratum has no group in takes the smallest new group (then the first in hash order)
    of the split with most groups."""
    for empty in range(len(SPLITS)):
        placed = np.bincount(split[members], minlength=len(SPLITS))
        if config.ratios[empty] == 0 or placed[empty]:
            continue
        donors = [s for s in range(len(SPLITS)) if placed[s] > 1]
        if not donors:
            continue
        donor = max(donors, key=lambda s: placed[s])
        movable = new[split[new] == donor]  # in hash order
        if len(movable):
            split[movable[np.argmin(sizes[movable])]] = empty  # argmin: the first of the smallest


def parts_folder(assignment_uri: str) -> str:
    """Where the assignment is also written per shard: a worker reads its shard's groups, not all."""
    return assignment_uri.removesuffix(".parquet") + ".parts"


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
    moves_uri: str | None = None  # groups the leakage guard moved into their copies' split (tasks/publish/leakage.py)


class SplitStage(RowStage):
    name = "split"
    Config = ApplySplit
    reads = frozenset({"group_id"})
    writes = frozenset({"split"})

    def setup(self) -> None:
        self.assignment: dict[str, str] | None = None
        moves = self.config.moves_uri
        self.moves = self._read(moves) if moves and storage.exists(moves) else {}

    def start_shard(self, shard: str) -> None:
        """This shard's groups only (at 10M groups the whole table is ~1.5 GB of dict per worker)."""
        part = storage.join(parts_folder(self.config.assignment_uri), f"{shard}.parquet")
        self.assignment = self._read(part) if storage.exists(part) else None

    def check(self, row: dict):
        if self.assignment is None:  # a shard the decision did not see by name: the whole table
            self.assignment = self._read(self.config.assignment_uri)
        group = row["group_id"]
        return {**row, "split": self.moves.get(group) or self.assignment[group]}

    @staticmethod
    def _read(uri: str) -> dict[str, str]:
        table = storage.read_parquet(uri, columns=["group_id", "split"])
        return dict(zip(table.column("group_id").to_pylist(), table.column("split").to_pylist()))
