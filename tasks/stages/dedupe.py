"""Dedupe: copies of one picture, recording or clip become one item with the union of their texts,
and copies never straddle splits.

Global step in three phases. Signatures are the cleaned shards' own columns, read by projection.
`decide_duplicates` makes one decision over all shards (and the other partitions' published items):

- pairs, each with its evidence (tasks/similar/): identical normalized bytes (sha256); images whose
  pHashes lie within `image_radius` bits; sounds whose Chromaprints differ in at most `audio_max_ber`
  of their bits, or that share `audio_min_landmarks` landmarks at one alignment, each verified on the
  waveform; videos whose keyframe pHashes (median) lie within `video_radius` (pictures decide:
  videos whose sound tracks match as sounds do only join one group, neither is rejected);
- pairs form clusters (union-find); in each, one member is kept by the `keep` policy and the others
  are rejects (`duplicate:exact|near|audio|video`, or `duplicate:published` when an earlier partition
  holds the cluster) naming it and the distance; their texts join the kept item and their groups
  its group;
- near-identical captions (MinHash LSH) join their items' groups without merging them (rejects
  `duplicate:caption` only for the sources in `captions.drop`); a caption on `boilerplate_items` or
  more items is flagged in the report and used for nothing.

`DedupeStage` applies it. The decision lists only the items it changes, so it stays small when
duplicates are rare; its summary (counts per reason and source, boilerplate) is `<decision>.json`.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from ..core import storage
from ..core.committed import Record, committed
from ..core.groups import UnionFind
from ..core.redact import redact_text
from ..core.schema import CAPTION_KINDS, SAMPLE_SCHEMA, TEXT, table_of
from ..core.settings import Strict
from ..core.stored_media import StoredMedia
from ..media.kinds import KINDS, SIGNATURE_COLUMNS, Fetch
from ..media.text import unique_texts
from ..published.index import WITHDRAWN_SCHEMA
from ..similar import bits
from ..similar.captions import caption_index_pairs, normalize
from ..similar.search import CopySearch
from ..similar.signatures import Signatures
from .stage import Reject, RowStage


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


DECISION_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("group_id", pa.string()),
        ("duplicate_of", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("merged_texts", pa.list_(TEXT)),
    ]
)
PAIR_COLUMNS = ["sample_id", "modality", "sha256", *SIGNATURE_COLUMNS]  # held for every item
# what the caption search reads of `texts`: two of its fields (the whole column took a third longer to read)
CAPTION_FIELDS = ["texts.list.element.text", "texts.list.element.kind"]
SIGNATURES = list(
    dict.fromkeys(
        [  # read only for the items a pair names (each once: a kind may name a fact as a signature)
            "sample_id",
            "source",
            "group_id",
            "sha256",
            *SIGNATURE_COLUMNS,
            "modality",
            "width",
            "height",
            "duration_s",
            "partition",
            "source_rows",
            "sample_rate",
            "channels",
            "media_size",
            "media_ext",
            "source_uri",
            "scores",  # the measured bandwidth of a sound
        ]
    )
)


def keep_order(config: DedupeConfig, central: dict[str, float] | None = None):
    """Sort key of a cluster's members: the first is kept (see KEEP_CRITERIA). Ties fall to the smallest
    sample_id, so the choice never depends on shard order. `central`: each member's mean distance to
    the others (`centrality`), for the `best` policy."""
    criteria = {name: measure for name, measure, _ in KEEP_CRITERIA}
    prefer = {source: rank for rank, source in enumerate(config.prefer_sources)}
    central = central or {}

    def key(item):
        measured = tuple(
            round(central.get(item["sample_id"], 0.0), 6) if name == "medoid" else criteria[name](item)
            for name in POLICIES[config.keep]
        )
        return (prefer.get(item["source"], len(prefer)), *measured, item["sample_id"])

    return key


def _pixels(item) -> int:
    return (item["width"] or 0) * (item["height"] or 0)


def _sound_rate(item) -> float:
    """Samples a second a sound really needs: its rate, or twice its measured bandwidth when that is lower
    (a clip resampled up from 8 kHz is an 8 kHz clip)."""
    rate = float(item["sample_rate"] or 0)
    bandwidth = next((s["value"] for s in item["scores"] or [] if s["name"] == "bandwidth_hz"), None)
    return min(rate, 2 * bandwidth) if bandwidth else rate


def _resolution(item) -> tuple:
    """Pixels; for a sound, its effective rate in half-octave steps (bandwidths measured on copies of
    one recording differ by a few hundred hertz), then channels."""
    rate = _sound_rate(item)
    return (-_pixels(item), -round(2 * math.log2(rate)) if rate else 0, -(item["channels"] or 0))


def _as_it_came(item) -> bool:
    """Published in the container it came in (not re-encoded by clean: a PNG or WebP became a JPEG)."""
    source = (item["source_uri"] or "").split("?")[0].rsplit("/", 1)[-1].rsplit(".", 1)[-1].lower()
    return source.replace("jpeg", "jpg") == (item["media_ext"] or "")


# (name, what sorts first, why it wins): each a measure where smaller is better
KEEP_CRITERIA = [
    ("resolution", _resolution, "higher resolution"),
    ("not_resampled_up", lambda i: (i["sample_rate"] or 0) > 1.25 * _sound_rate(i), "not resampled up"),
    ("medoid", lambda i: 0, "the copy the others are edits of (closest to all of them)"),  # from `centrality`
    ("as_it_came", lambda i: not _as_it_came(i), "published as it came, not re-encoded"),
    ("density", lambda i: -(i["media_size"] or 0) / max(_pixels(i) or (i["duration_s"] or 0) * 1000, 1),
     "more bytes for its size, in the same codec"),
    ("duration", lambda i: -(i["duration_s"] or 0), "longer"),
    ("earliest", lambda i: (i["partition"] or "", min(i["source_rows"] or [0])), "seen first"),
]  # fmt: skip
POLICIES = {
    # the best copy: most pixels (or the samples a second its sound really holds, and channels), then
    # not resampled up, then the least edited, then one published as it came, then the most bytes for its size
    "best": ("resolution", "not_resampled_up", "medoid", "as_it_came", "density", "duration"),
    "largest": ("resolution", "duration"),
    "longest": ("duration", "resolution"),
    "earliest": ("earliest",),
}


def centrality(members: list[dict], fetch: Fetch | None = None) -> dict[str, float]:
    """Each member's mean distance to the others (its kind's `mean_distances`, on the media `fetch` gives
    where the kind compares media): an original is close to each of its edits, edits of different kinds
    are farther from each other."""
    found = {}
    for name in {m["modality"] for m in members}:  # one, in practice: one media is one kind
        means = KINDS[name].mean_distances(members, fetch)
        found.update((m["sample_id"], d) for m, d in zip(members, means) if m["modality"] == name)
    return found


def why_kept(kept: dict, copy: dict, config: DedupeConfig, central: dict[str, float]) -> str:
    """The first criterion of the policy on which the kept item beat this copy."""
    if config.prefer_sources and kept["source"] != copy["source"]:
        return f"kept from the preferred source {kept['source']}"
    criteria = {name: (measure, why) for name, measure, why in KEEP_CRITERIA}
    for name in POLICIES[config.keep]:
        measure, why = criteria[name]
        a, b = (round(central.get(x["sample_id"], 0.0), 6) if name == "medoid" else measure(x) for x in (kept, copy))
        if a != b:
            return f"kept as {why}"
    return "kept as the smallest id of equals"


def find_pairs(
    items: Signatures, config: DedupeConfig, fetch: Fetch | None = None, known: dict | None = None
) -> tuple[dict[tuple[str, str], tuple[str, str]], dict, dict]:
    """(a, b) -> (reason, what was measured) for every two items found to be one media: identical bytes
    first, then each media kind's own signatures (tasks/media/kinds/), each candidate verified on the
    media itself (`fetch`: the media of items by key) where the kind says a signature is not enough;
    the first evidence found stays. Also returns each kind's verification report, and the score of every
    pair verified ((a, b) -> score; `known`: scores measured before, reused)."""
    evidence = {pair: ("duplicate:exact", "same media bytes") for pair in items.exact_pairs()}
    reports, scores = {}, {}
    for kind in KINDS.values():
        candidates = [c for c in kind.duplicate_pairs(items, config) if (c[0], c[1]) not in evidence]
        confirmed, report, measured = kind.verified(candidates, fetch, config, known)
        scores.update(measured)
        if report:
            reports[kind.name] = report
        for a, b, reason, measured_text in confirmed:
            evidence.setdefault((a, b), (reason, measured_text))
    return evidence, reports, scores


def withdrawn_uri(decision_uri: str) -> str:
    """Where a decision lists the published items this partition withdraws (a backfill's older copies win)."""
    return decision_uri.removesuffix(".parquet") + ".withdrawn.parquet"


def verified_uri(decision_uri: str) -> str:
    """Where a decision keeps the score of every pair it verified (the leakage guard reuses them)."""
    return decision_uri.removesuffix(".parquet") + ".verified.parquet"


def read_verified(decision_uri: str) -> dict[tuple[str, str], float]:
    uri = verified_uri(decision_uri)
    if not storage.exists(uri):
        return {}
    table = storage.read_parquet(uri).to_pydict()
    return {(a, b): s for a, b, s in zip(table["a"], table["b"], table["score"])}


@dataclass(frozen=True)
class DedupeDecision(Record):
    """Where the decision is (DECISION_SCHEMA rows), the published items it withdraws, and its report (what a
    version's stats.json says of dedupe)."""

    uri: str
    withdrawn_uri: str
    report: dict

    def saved(self) -> dict:
        return self.report

    @classmethod
    def restored(cls, recorded: dict, out_uri: str, **_) -> DedupeDecision:
        return cls(out_uri, withdrawn_uri(out_uri), recorded)


@committed(lambda out_uri, **_: out_uri.removesuffix(".parquet") + ".json", DedupeDecision)
def decide_duplicates(
    shard_uris: list[str],
    out_uri: str,
    config: DedupeConfig | None = None,
    published_uri: str | None = None,
    partition: str = "",
    published_groups: frozenset[str] = frozenset(),
    media: StoredMedia | None = None,
) -> DedupeDecision:
    """Decide over all shards (and, with `published_uri`, the other partitions' published items: see
    tasks/published/index.py). Writes the decision to `out_uri`, its summary beside it, and the published
    items this partition withdraws (a backfill's older copies win) to `<out_uri>.withdrawn.parquet`.
    `media`: where the items' media are, to verify candidate pairs on and rank cluster members by.

    Every item's signatures stay Arrow columns (tasks/similar/signatures.py); only the items a pair or a cluster
    names are read as rows, so the decision scales to 10M items in one driver."""
    config = config or DedupeConfig()
    held = Ours(shard_uris, captions=config.captions.threshold is not None)
    fetch = media.get if media is not None else None
    published = _published_items(published_uri) if config.against_published else None
    found = Signatures(held.table, *([published] if published is not None else []))
    pairs = _search(found, held.table, published, config, fetch)
    # the only items read as rows: those a pair names
    items = held.rows({x for x in pairs.named if "/" not in x})
    theirs = found.rows(x for x in pairs.named if "/" in x) if published is not None else {}

    # a group that joins one a version published takes its name, and so its split (tasks/stages/split.py)
    verdicts = Verdicts(
        UnionFind(keeps_name=lambda label: bool(published_groups) and redact_text(label) in published_groups)
    )
    clusters = _clusters(pairs.evidence)
    for cluster in clusters:
        _resolve_cluster(cluster, items, theirs, partition, pairs, config, fetch, verdicts)
    related = _group_related(pairs.related, items, theirs, verdicts.groups)
    captions = _caption_duplicates(pairs.captions, items, theirs, config.captions, keep_order(config), verdicts)
    within = {k: v for k, v in verdicts.duplicate_of.items() if verdicts.reasons[k][0] not in NOT_MERGED}
    merged = _merged_texts(items, within) if config.merge_texts else {}
    summary = {
        **_counts(verdicts, clusters, items, theirs),
        # candidate pairs checked on the media itself (sounds: tasks/similar/waveform.py), and their scores
        "verification": pairs.verification,
        "grouped_not_merged": dict(sorted(related.items())),  # e.g. videos sharing a sound track
        # sounds without any signature (too short or too silent): compared by their bytes only
        "compared_by_bytes_only": _compared_by_bytes_only(held.table),
        **captions,
    }
    storage.write_parquet(withdrawn_uri(out_uri), table_of(verdicts.withdrawn, WITHDRAWN_SCHEMA))
    measured = sorted(pairs.scores)
    storage.write_parquet(
        verified_uri(out_uri),
        pa.table(
            {"a": [a for a, _ in measured], "b": [b for _, b in measured], "score": [pairs.scores[p] for p in measured]}
        ),
    )
    storage.write_parquet(out_uri, table_of(_decision_rows(held, verdicts, merged), DECISION_SCHEMA))
    return DedupeDecision(out_uri, withdrawn_uri(out_uri), summary)


# copies whose texts do not join the kept item's: a published item's (it is not rewritten) and a caption
# duplicate's (another media, whose texts describe it)
NOT_MERGED = ("duplicate:published", "duplicate:caption")


def _published_items(published_uri: str | None) -> pa.Table | None:
    """The other partitions' published items, keyed apart from ours (`<partition>/<sample_id>`): the same
    file in another partition has the same sample_id."""
    if not published_uri:
        return None
    published = storage.read_parquet(published_uri)
    keys = pc.binary_join_element_wise(published.column("partition"), published.column("sample_id"), "/")
    return published.append_column("key", keys)


@dataclass
class Found:
    """What the search found: copies with their evidence, related items, caption pairs; what it verified."""

    evidence: dict[tuple[str, str], tuple[str, str]]
    verification: dict
    scores: dict[tuple[str, str], float]
    related: list[tuple[str, str, str]]
    captions: list[tuple[str, str]]

    @property
    def named(self) -> set[str]:
        """Every item a pair names: the only ones read as rows."""
        pairs = itertools.chain(self.evidence, self.captions, ((a, b) for a, b, _ in self.related))
        return {x for pair in pairs for x in pair}

    @functools.cached_property
    def pairs_of(self) -> dict[str, list[tuple[str, str]]]:
        """Item -> its pairs, in order: what `_why` looks through."""
        pairs_of = defaultdict(list)
        for pair in sorted(self.evidence):
            pairs_of[pair[0]].append(pair)
            pairs_of[pair[1]].append(pair)
        return pairs_of


def _search(found: Signatures, ours: pa.Table, published: pa.Table | None, config: DedupeConfig, fetch) -> Found:
    # captions are compared on a thread while the media signatures are: both spend most of their time
    # in numpy, which lets go of the GIL (bench/driver.py); the thread then helps the pHash search
    with ThreadPoolExecutor(1) as pool, bits.sharing(pool):
        captions = pool.submit(_caption_pairs, ours, published, config.captions)
        evidence, verification, scores = find_pairs(found, config, fetch)
        related = [(a, b, why) for kind in KINDS.values() for a, b, why, _ in kind.related_pairs(found, config)]
        return Found(evidence, verification, scores, related, captions.result())


@dataclass
class Verdicts:
    """What the decision has ruled so far: each copy, the item it is a copy of and why; the groups joined;
    the published items withdrawn."""

    groups: UnionFind
    duplicate_of: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, tuple[str, str]] = field(default_factory=dict)
    withdrawn: list[dict] = field(default_factory=list)

    def copy(self, sample_id: str, of: str, reason: str, detail: str) -> None:
        self.duplicate_of[sample_id] = of
        self.reasons[sample_id] = (reason, detail)


def _resolve_cluster(cluster, items, theirs, partition, pairs: Found, config, fetch, verdicts: Verdicts) -> None:
    """One cluster of copies: the member kept by the keep policy, the others its copies; or, when an earlier
    partition published the cluster, every one of ours a copy of that item."""
    members = [items[x] for x in cluster if x in items]
    if not members:
        return
    central = centrality(members, fetch) if config.keep == "best" and len(members) > 2 else {}
    ours = sorted(members, key=keep_order(config, central))
    published = sorted((theirs[x] for x in cluster if x in theirs), key=lambda i: (i["partition"], i["sample_id"]))
    if published and published[0]["partition"] < partition:  # an earlier partition holds it: ours all go
        first = published[0]
        for copy in ours:
            where = f"published in partition {first['partition']} as {first['sample_id']}"
            verdicts.copy(copy["sample_id"], first["sample_id"], "duplicate:published", where)
        return
    kept, *copies = ours
    verdicts.withdrawn += [
        {"sample_id": t["sample_id"], "partition": t["partition"], "withdrawn_by": kept["sample_id"]} for t in published
    ]  # later partitions' copies, built first: this one is older
    for copy in copies:
        reason, measured = _why(copy["sample_id"], kept["sample_id"], pairs.evidence, pairs.pairs_of)
        verdicts.copy(
            copy["sample_id"], kept["sample_id"], reason, f"{measured}; {why_kept(kept, copy, config, central)}"
        )
        verdicts.groups.union(copy["group_id"], kept["group_id"])


def _group_related(related, items: dict, theirs: dict, groups: UnionFind) -> Counter:
    """Items that share a part (a sound track): one group, nothing rejected. Counted by reason."""
    joined = Counter()
    for a, b, reason in related:
        labels = [items[x]["group_id"] if x in items else theirs[x]["group_id"] for x in (a, b)]
        if (a in items or b in items) and all(labels):
            groups.union(*labels)
            joined[reason] += 1
    return joined


def _decision_rows(held: Ours, verdicts: Verdicts, merged: dict[str, list]) -> list[dict]:
    """A row for every item the decision changes: a copy, an item given texts, or one whose group joined another."""
    rows = []
    changed = set(verdicts.duplicate_of) | set(merged)
    for sample_id, group_id in held.members_of_groups(set(verdicts.groups.parent), changed):
        new_group = verdicts.groups.find(group_id)
        if new_group != group_id or sample_id in changed:
            reason, detail = verdicts.reasons.get(sample_id, (None, None))
            rows.append(
                {
                    "sample_id": sample_id,
                    "group_id": new_group,
                    "duplicate_of": verdicts.duplicate_of.get(sample_id),
                    "reason": reason,
                    "detail": detail,
                    "merged_texts": merged.get(sample_id),
                }
            )
    return rows


def _counts(verdicts: Verdicts, clusters: list[list[str]], items: dict, theirs: dict) -> dict:
    by_modality = defaultdict(lambda: {"clusters": 0, "removed": 0})
    for cluster in clusters:
        first = items.get(cluster[0]) or theirs.get(cluster[0])
        by_modality[first["modality"]]["clusters"] += 1
    for copy in verdicts.duplicate_of:
        by_modality[items[copy]["modality"]]["removed"] += 1
    reasons = verdicts.reasons
    return {
        "duplicates": len(verdicts.duplicate_of),
        "withdrawn": len(verdicts.withdrawn),
        "by_reason": dict(sorted(Counter(reason for reason, _ in reasons.values()).items())),
        "by_source": dict(sorted(Counter(f"{items[s]['source']}:{r}" for s, (r, _) in reasons.items()).items())),
        # per modality: clusters of copies, and the members removed (caption duplicates of `drop` sources too)
        "by_modality": dict(sorted(by_modality.items())),
    }


def _captions_of(texts: pa.ChunkedArray) -> pa.Array:
    """Each item's captions as a list of plain strings (as the published index keeps them): a text's
    other fields are not needed to compare captions."""
    texts = texts.combine_chunks()
    flat = pc.list_flatten(texts)
    parents = pc.list_parent_indices(texts).to_numpy()
    mine = pc.is_in(flat.field("kind"), pa.array(sorted(CAPTION_KINDS))).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(texts) + 1, np.int32)
    np.cumsum(np.bincount(parents[mine], minlength=len(texts)), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), flat.field("text").filter(pa.array(mine)))


class Ours:
    """This build's items: the columns every item holds here (`PAIR_COLUMNS`, the group and, with
    `captions`, each item's captions) in one table, and which shard each row came from, so that the rest
    of a row is read only from the shards that hold the rows asked for (one set lookup over all items,
    not one per shard)."""

    def __init__(self, shard_uris: list[str], captions: bool = False):
        columns = PAIR_COLUMNS + ["group_id"] + (CAPTION_FIELDS if captions else [])

        def held(uri: str) -> pa.Table:
            table = storage.read_parquet(uri, columns=columns)
            if not captions:
                return table
            return table.append_column("captions", _captions_of(table.column("texts"))).drop_columns(["texts"])

        parts = _per_shard(held, shard_uris)
        self.uris = shard_uris
        self.starts = np.cumsum([0] + [p.num_rows for p in parts])
        if not parts:  # no shards: the same columns, empty
            fields = [SAMPLE_SCHEMA.field(c) for c in PAIR_COLUMNS + ["group_id"]]
            fields += [pa.field("captions", pa.list_(pa.string()))] if captions else []
            parts = [pa.schema(fields).empty_table()]
        table = pa.concat_tables(parts)
        self.table = table.append_column("key", table.column("sample_id"))

    def where(self, column: str, values) -> np.ndarray:
        """Positions, in order, of the rows whose `column` is one of `values`."""
        mask = pc.is_in(self.table.column(column), pa.array(sorted(values), pa.string()))
        return np.flatnonzero(mask.to_numpy(zero_copy_only=False))

    def read(self, positions: np.ndarray, columns: list[str]) -> pa.Table:
        """These rows' `columns`, read from their shards."""
        positions = np.sort(positions)
        shards, firsts = np.unique(np.searchsorted(self.starts, positions, side="right") - 1, return_index=True)
        ends = np.r_[firsts[1:], len(positions)]

        def rows_of(k: int) -> pa.Table:
            table = storage.read_parquet(self.uris[shards[k]], columns=columns)
            return table.take(pa.array(positions[firsts[k] : ends[k]] - self.starts[shards[k]]))

        parts = _per_shard(rows_of, range(len(shards)))
        return pa.concat_tables(parts) if parts else pa.table({c: pa.array([], pa.string()) for c in columns})

    def rows(self, ids: set[str]) -> dict[str, dict]:
        """These items' signature columns, texts and captions, as dicts (one read of their shards)."""
        positions = self.where("key", ids) if ids else []
        if not len(positions):
            return {}
        held = self.table.drop_columns(["key"]).take(pa.array(positions))  # not read again; `read` keeps this order
        table = self.read(positions, [c for c in SIGNATURES + ["texts"] if c not in held.column_names])
        for name in held.column_names:
            table = table.append_column(name, held.column(name))
        if "captions" not in table.column_names:
            table = table.append_column("captions", _captions_of(table.column("texts")))
        return {row["sample_id"]: row for row in table.to_pylist()}

    def members_of_groups(self, labels: set[str], ids: set[str]) -> list[tuple[str, str]]:
        """(sample_id, group_id) of every item in one of these groups, or one of these items, by id."""
        positions = np.union1d(self.where("group_id", labels), self.where("key", ids))
        found = self.table.select(["key", "group_id"]).take(pa.array(positions, pa.int64()))
        return sorted(zip(found.column("key").to_pylist(), found.column("group_id").to_pylist()))


def _per_shard(read, shards) -> list:
    """`read` of each shard, a thread per core: Arrow decodes without the GIL (used where nothing else
    runs: at 2M items, 80k rows from 1,000 shards 10.2 -> 4.9 s)."""
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return list(pool.map(read, shards))


def _clusters(evidence) -> list[list[str]]:
    union = UnionFind()
    for a, b in evidence:
        union.union(a, b)
    members: dict[str, set[str]] = defaultdict(set)
    for pair in evidence:
        for x in pair:
            members[union.find(x)].add(x)
    return [sorted(m) for _, m in sorted(members.items())]


def _compared_by_bytes_only(ours: pa.Table) -> int:
    """Our sounds without a signature of any kind (too short or too silent), counted in Arrow."""
    sounds = ours.filter(pc.equal(ours.column("modality"), "audio"))
    printed = [
        pc.fill_null(pc.greater(pc.list_value_length(sounds.column(c)), 0), False)
        for c in ("audio_fingerprint", "sound_landmarks", "sound_print")
        if c in sounds.column_names
    ]
    either = functools.reduce(pc.or_, printed) if printed else pa.array([False] * sounds.num_rows)
    return sounds.num_rows - (pc.sum(either).as_py() or 0)


def _caption_pairs(ours: pa.Table, published: pa.Table | None, config: CaptionDedupeConfig) -> list:
    """(a, b) for items with near-identical captions: ours (keyed by sample_id), then the published ones
    (by partition/sample_id). The captions' strings go to tasks/similar/captions.py as one Arrow column,
    which it reads a block at a time; each string's item is kept beside it."""
    if config.threshold is None:
        return []
    tables = [ours, *([published] if published is not None else [])]
    lists = [chunk for table in tables for chunk in table.column("captions").chunks]
    if not lists:
        return []
    offsets = np.cumsum([0] + [len(captions) for captions in lists])
    owner = np.concatenate([pc.list_parent_indices(c).to_numpy() + o for c, o in zip(lists, offsets.tolist())])
    found = caption_index_pairs(pa.chunked_array([pc.list_flatten(c) for c in lists], pa.string()), config.threshold)
    pairs = sorted({(int(owner[x]), int(owner[y])) for x, y, _ in found if owner[x] != owner[y]})
    every_key = pa.chunked_array([chunk for table in tables for chunk in table.column("key").chunks], pa.string())
    named = every_key.take(pa.array([x for pair in pairs for x in pair], pa.int64())).to_pylist()
    return list(zip(named[::2], named[1::2]))


def _caption_duplicates(
    pairs: list,
    items: dict,
    published: dict,
    config: CaptionDedupeConfig,
    order,
    verdicts: Verdicts,
) -> dict:
    """Join the groups of items with near-identical captions (`pairs`), ours or a published version's
    (dropping ours of `drop` sources); flag boilerplate. `items`, `published`: the rows of the items the
    pairs name. Returns the report: near-duplicate captions per source, and the boilerplate. An item
    whose caption a version already published joins that item's group, and so takes its split."""
    if config.threshold is None:
        return {"caption_duplicates": {}, "boilerplate": []}
    per_source, boilerplate = Counter(), []
    for cluster in _clusters(dict.fromkeys(pairs)):
        if len(cluster) >= config.boilerplate_items:
            first = items.get(cluster[0]) or published[cluster[0]]
            boilerplate.append({"caption": normalize((first["captions"] or [""])[-1]), "items": len(cluster)})
            continue
        ours = [x for x in cluster if x in items]
        theirs = sorted(
            (published[x] for x in cluster if x in published), key=lambda i: (i["partition"], i["sample_id"])
        )
        # an item of a source that keeps its copies stays before one of a source that drops them
        live = sorted(
            (items[x] for x in ours if x not in verdicts.duplicate_of),
            key=lambda i: (i["source"] in config.drop, order(i)),
        )
        for item in ours:
            per_source[items[item]["source"]] += 1
        anchor = theirs[0] if theirs else (live[0] if live else None)
        for other in live if theirs else live[1:]:
            if anchor["group_id"] is None:  # an item indexed before groups were recorded
                break
            verdicts.groups.union(other["group_id"], anchor["group_id"])
            if other["source"] in config.drop:
                where = f" (published in partition {anchor['partition']})" if theirs else ""
                detail = f"a caption near-identical to {anchor['sample_id']}'s{where}"
                verdicts.copy(other["sample_id"], anchor["sample_id"], "duplicate:caption", detail)
    return {
        "caption_duplicates": dict(sorted(per_source.items())),
        "boilerplate": sorted(boilerplate, key=lambda b: -b["items"]),
    }


def _why(copy: str, kept: str, evidence: dict, pairs_of: dict[str, list]) -> tuple[str, str]:
    """The evidence tying a copy to the kept item; a copy tied through another member names that one."""
    pair = (min(copy, kept), max(copy, kept))
    if pair in evidence:
        reason, measured = evidence[pair]
        return reason, f"{measured} from {kept}"
    first = pairs_of[copy][0]
    reason, measured = evidence[first]
    return reason, f"{measured} from {first[1] if first[0] == copy else first[0]}, kept as {kept}"


def _merged_texts(items: dict[str, dict], duplicate_of: dict[str, str]) -> dict[str, list[dict]]:
    """The copies' texts (`items`: their rows), gathered for the items kept, in id order."""
    merged: dict[str, list[dict]] = defaultdict(list)
    for copy in sorted(duplicate_of):
        merged[duplicate_of[copy]].extend(items[copy]["texts"] or [])
    return merged


class ApplyDecision(Strict):
    decision_uri: str  # what decide_duplicates wrote


class DedupeStage(RowStage):
    name = "dedupe"
    Config = ApplyDecision
    reads = frozenset({"sha256"})
    writes = frozenset({"group_id", "texts"})

    def setup(self) -> None:
        self.decisions = {r["sample_id"]: r for r in storage.read_parquet(self.config.decision_uri).to_pylist()}

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
