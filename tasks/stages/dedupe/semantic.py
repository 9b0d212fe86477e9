"""Semantic dedupe (`dedupe.semantic`): items that show or say the same thing in different media or words.

A decision of its own after scoring, since it compares the score step's embeddings: the align models' for
images, videos (their frames' mean) and sounds, and a sentence model's of each item's first caption. For each
modality the recipe names, tasks/similar/semantic.py finds each item's most similar better member of its k-means
cluster (better: first in the keep policy's order for different media, SEMANTIC_POLICIES) and, with
`against_published`, the most similar item another partition published. At cosine ≥ 1 − ε the item is a
semantic duplicate of the nearer of the two: with `mode: group` it joins that item's group (and so its split;
a published group keeps its name and split) and nothing is removed; with `mode: reject` it is a
`duplicate:semantic` reject naming the item kept (the first of its chain, or the published one).

The report gives, per modality, how many items each ε would remove (the same pass answers every ε), which a dry
run prints so that ε can be chosen before anything is removed. The decision's rows are DECISION_SCHEMA's, so
the `semantic` stage is the dedupe stage's code applied to them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...core import storage
from ...core.committed import Record, committed
from ...core.groups import UnionFind
from ...core.redact import redact_text
from ...core.schema import EMBEDDING_SCHEMA, table_of
from ...similar.semantic import EPSILONS, nearest_better, nearest_in, removed_shares
from .apply import DedupeStage
from .config import DedupeConfig, SemanticConfig
from .decide import DECISION_SCHEMA, Verdicts
from .keep import SEMANTIC_POLICIES, keep_order, why_kept

VECTOR_COLUMNS = ["sample_id", "modality", "media", "caption"]  # what the decision reads of an embeddings file
RANK_COLUMNS = [
    "sample_id", "source", "group_id", "modality", "width", "height", "duration_s", "partition", "source_rows",
    "sample_rate", "channels", "scores",
]  # fmt: skip


class SemanticStage(DedupeStage):
    """The semantic decision applied to one shard: rejects (`mode: reject`) and joined groups."""

    name = "semantic"


@dataclass(frozen=True)
class SemanticDecision(Record):
    uri: str  # DECISION_SCHEMA rows
    report: dict  # per modality: ε, mode, items, duplicates, removed share at each ε

    def saved(self) -> dict:
        return self.report

    @classmethod
    def restored(cls, recorded: dict, out_uri: str, **_) -> SemanticDecision:
        return cls(out_uri, recorded)


@dataclass
class Pool:
    """One modality's items that have an embedding: their rows (RANK_COLUMNS) and vectors, in one order."""

    rows: list[dict]
    vectors: np.ndarray


@dataclass
class Published:
    """Other partitions' published embeddings ((partition, files) each), and their live items (the published
    index's snapshot: what was withdrawn is not in it), for their groups."""

    files: list[tuple[str, list[str]]]
    items_uri: str | None


@committed(lambda out_uri, **_: out_uri.removesuffix(".parquet") + ".json", SemanticDecision)
def decide_semantic(
    shard_uris: list[str],
    embedding_uris: list[str],
    out_uri: str,
    config: DedupeConfig,
    published: Published | None = None,
    published_groups: frozenset[str] = frozenset(),
) -> SemanticDecision:
    """Decide over every scored item (`shard_uris`, each with its embeddings file) and what other partitions
    published; write the decision rows to `out_uri` and its report beside it."""
    rows = [r for uri in shard_uris for r in storage.read_parquet(uri, columns=RANK_COLUMNS).to_pylist()]
    parts = config.semantic.parts()
    pools = _pools(rows, embedding_uris, parts)
    verdicts = Verdicts(UnionFind(keeps_name=lambda label: redact_text(label) in published_groups))
    report = {}
    for name, part in parts.items():  # an item one modality removed is not another's kept member
        pool = pools[name]
        live = [i for i, r in enumerate(pool.rows) if r["sample_id"] not in verdicts.duplicate_of]
        pool = Pool([pool.rows[i] for i in live], pool.vectors[live])
        report[name] = _decide(name, pool, part, config, published, verdicts)
    storage.write_parquet(out_uri, table_of(_decision_rows(rows, verdicts), DECISION_SCHEMA))
    return SemanticDecision(out_uri, report)


def _pools(rows: list[dict], embedding_uris: list[str], parts: dict) -> dict[str, Pool]:
    by_id = {r["sample_id"]: r for r in rows}
    found: dict[str, tuple[list[dict], list[np.ndarray]]] = {name: ([], []) for name in parts}
    for uri in embedding_uris:
        if not storage.exists(uri):  # a shard with nothing scored
            continue
        table = _read_vectors(uri)
        for name in parts:
            ids, vectors = _vectors(table, name)
            kept = [i for i, sample_id in enumerate(ids) if sample_id in by_id]  # rejected after scoring: gone
            found[name][0].extend(by_id[ids[i]] for i in kept)
            found[name][1].append(vectors[kept])
    return {
        name: Pool(rows, np.concatenate(vectors) if vectors else np.zeros((0, 1), np.float16))
        for name, (rows, vectors) in found.items()
    }


def _read_vectors(uri: str) -> pa.Table:
    """An embeddings file's VECTOR_COLUMNS; one a version published before captions were embedded has no
    `caption` column: read as nulls."""
    fs, path = storage.filesystem(uri)
    with fs.open(path, "rb") as f:
        present = set(pq.ParquetFile(f).schema_arrow.names)
    table = storage.read_parquet(uri, columns=[c for c in VECTOR_COLUMNS if c in present])
    for name in VECTOR_COLUMNS:
        if name not in present:
            table = table.append_column(
                EMBEDDING_SCHEMA.field(name), pa.nulls(table.num_rows, EMBEDDING_SCHEMA.field(name).type)
            )
    return table


def _vectors(table: pa.Table, name: str) -> tuple[list[str], np.ndarray]:
    """The sample ids and embeddings (float16, one row each) of one modality in an embeddings table: its media's,
    or for `captions` every item's caption embedding."""
    column = "caption" if name == "captions" else "media"
    mask = pc.is_valid(table.column(column))
    if name != "captions":
        mask = pc.and_(mask, pc.equal(table.column("modality"), name))
    table = table.filter(mask)
    flat = table.column(column).combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return table.column("sample_id").to_pylist(), flat.reshape(table.num_rows, -1) if table.num_rows else flat


def _decide(name: str, pool: Pool, part: SemanticConfig, config: DedupeConfig, published, verdicts) -> dict:
    """One modality: each item's nearest better member (or published item), and the verdicts at its ε."""
    key = keep_order(config, policies=SEMANTIC_POLICIES)
    order = sorted(range(len(pool.rows)), key=lambda i: key(pool.rows[i]))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    parent, cosine = nearest_better(pool.vectors, rank, part.clusters)
    theirs, their_cosine = _nearest_published(name, pool.vectors, published)
    nearest = np.maximum(cosine, their_cosine)
    kept_as: dict[int, tuple[str, dict | None]] = {}  # item -> the id its chain keeps, and that item's row (ours)
    duplicates = of_published = 0
    for i in order:  # best first: a parent's chain is known before its children's
        row = pool.rows[i]
        if nearest[i] < 1 - part.epsilon:
            kept_as[i] = (row["sample_id"], row)
            continue
        duplicates += 1
        if their_cosine[i] >= cosine[i]:
            item = theirs[i]
            of_published += 1
            kept_as[i] = (item["sample_id"], None)
            anchor, near, why = item["group_id"], item["sample_id"], f"published in partition {item['partition']}"
        else:
            kept_as[i] = kept_as[parent[i]]
            kept_row = kept_as[i][1]
            anchor, near = pool.rows[parent[i]]["group_id"], pool.rows[parent[i]]["sample_id"]
            why = why_kept(kept_row, row, config, {}, SEMANTIC_POLICIES) if kept_row else "published"
        detail = f"{name} cosine {nearest[i]:.4f} to {near} (epsilon {part.epsilon:g}); {kept_as[i][0]} {why}"
        if part.mode == "reject":
            verdicts.copy(row["sample_id"], kept_as[i][0], "duplicate:semantic", detail)
        elif anchor:
            verdicts.groups.union(row["group_id"], anchor)
    return {
        "epsilon": part.epsilon,
        "mode": part.mode,
        "items": len(pool.rows),
        "duplicates": duplicates,  # rejected (mode reject) or grouped with the item they duplicate
        "of_published": of_published,
        "removed_share_by_epsilon": removed_shares(nearest, sorted({*EPSILONS, part.epsilon})),
    }


def _nearest_published(name: str, vectors: np.ndarray, published: Published | None) -> tuple[list, np.ndarray]:
    """For each vector, the most similar live item other partitions published (its index row), and the cosine
    (-1 where none): one partition's embeddings in memory at a time."""
    best, cosine = [None] * len(vectors), np.full(len(vectors), -1.0, np.float32)
    if published is None or not published.items_uri or not len(vectors):
        return best, cosine
    live = storage.read_parquet(published.items_uri, columns=["sample_id", "partition", "group_id"])
    for partition, uris in published.files:
        theirs = live.filter(pc.equal(live.column("partition"), partition))
        groups = dict(zip(theirs.column("sample_id").to_pylist(), theirs.column("group_id").to_pylist()))
        tables = [_read_vectors(uri) for uri in uris]
        ids, found = _vectors(pa.concat_tables(tables), name)
        keep = [i for i, x in enumerate(ids) if x in groups]
        where, sims = nearest_in(vectors, found[keep])
        for i in np.flatnonzero(sims > cosine):
            sample_id = ids[keep[where[i]]]
            best[i] = {"sample_id": sample_id, "partition": partition, "group_id": groups[sample_id]}
            cosine[i] = sims[i]
    return best, cosine


def _decision_rows(rows: list[dict], verdicts: Verdicts) -> list[dict]:
    """A row for each item the decision rejects or moves to another group."""
    found = []
    for row in rows:
        group = verdicts.groups.find(row["group_id"]) if row["group_id"] in verdicts.groups.parent else None
        rejected = row["sample_id"] in verdicts.duplicate_of
        if rejected or (group is not None and group != row["group_id"]):
            reason, detail = verdicts.reasons.get(row["sample_id"], (None, None))
            found.append(
                {
                    "sample_id": row["sample_id"],
                    "group_id": group or row["group_id"],
                    "duplicate_of": verdicts.duplicate_of.get(row["sample_id"]),
                    "reason": reason,
                    "detail": detail,
                }
            )
    return found
