"""The dedupe decision over all shards: pairs into clusters, one member of each kept, the others rejects naming
it; caption look-alikes grouped; what it changes written as rows the dedupe stage applies."""

from __future__ import annotations

import functools
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...core import storage
from ...core.committed import Record, committed
from ...core.groups import UnionFind
from ...core.redact import redact_text
from ...core.schema import SAMPLE_SCHEMA, TEXT, table_of
from ...core.stored_media import StoredMedia
from ...media.kinds import SIGNATURE_COLUMNS
from ...published.index import WITHDRAWN_SCHEMA
from ...similar.captions import normalize
from ...similar.signatures import Signatures
from .config import CaptionDedupeConfig, DedupeConfig
from .keep import centrality, keep_order, why_kept
from .pairs import Found, captions_of, search_pairs

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
    pairs = search_pairs(found, held.table, published, config, fetch)
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
            return table.append_column("captions", captions_of(table.column("texts"))).drop_columns(["texts"])

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
            table = table.append_column("captions", captions_of(table.column("texts")))
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
