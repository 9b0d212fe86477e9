"""Tars: a version's media as WebDataset shards of a known size, one modality per tar.

    {split}/{modality}-{n:06d}.tar     per item: <key>.<jpg|flac|mp4|...> (the media, once),
                                       <key>.<sidecar> (keyframes, subtitles), <key>.json (its kind's member_schema),
                                       <key>.txt (the first text); keys are sample ids (no dots)
    {split}/document-{n:06d}.tar       per document: <key>.json (its segments in order, each picture naming
                                       its member), <key>.<n>.<jpg|...> (each picture once), <key>.txt (the
                                       passages in order)

A picture that is only part of documents (no text of its own) is published inside them, not as an
image item; a webdataset sample holds all it needs, so a picture two documents show is in both.

Two phases. `plan_tars` is a decision over every shard: it orders each split and modality's items (shard
order, then the order clean wrote their media), sizes every member exactly (the JSON member included) and
cuts tars at `publish.shard_max_bytes` and `publish.shard_max_items`, so every tar but the last of its
split and modality is full to within one item. `write_tar` is one unit of work per tar: it streams its
items from the media files of the shards they came from (one batch in memory at a time) into a tar whose
bytes are deterministic (members in plan order, fixed mtime/owner), so a rerun after a kill writes the same
file, and the same build gives the same files on a local disk and on S3. A tar is staged with its index
rows and a marker; `publish.commit_version` moves it into the version.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ByteSize, Field

from ..core import storage
from ..core.committed import Record, committed
from ..core.redact import redact_columns
from ..core.schema import SPLITS
from ..core.settings import Strict
from ..core.shards import bounded_ranges
from ..media.kinds import KINDS


class PublishConfig(Strict):
    """How a version's tars are cut: per split and modality, across the whole version, each at most
    this big and this many items (an item bigger than `shard_max_bytes` has a tar of its own)."""

    shard_max_bytes: ByteSize = Field(ByteSize(256 * 2**20), gt=0)
    shard_max_items: int = Field(10_000, ge=1, le=1_000_000)


INDEX_DROP = ["media_bytes", "sidecars"]
MEDIA_READ_ROWS = 16  # rows per read from a media file; memory is bounded by its row groups (one batch)
BLOCK = tarfile.BLOCKSIZE
# a tar ends with two zero blocks and is padded to a whole record: what a tar holds beyond its members
TAR_TAIL = 2 * BLOCK + tarfile.RECORDSIZE
PLAN_SCHEMA = pa.schema([("sample_id", pa.string()), ("shard", pa.int32())])


def published_alone(row: dict) -> bool:
    """Whether an item has a tar entry of its own: not a picture that is only part of documents (it has no
    text of its own; it is published inside them)."""
    return not (row["part_of"] and not row["texts"])


def member_bytes(size: int) -> int:
    """What a member of `size` bytes takes in a tar: its header block and its data padded to blocks."""
    return BLOCK + -(-size // BLOCK) * BLOCK


def tar_name(split: str, modality: str, n: int) -> str:
    return f"{split}/{modality}-{n:06d}.tar"


def published_items(items_uri: str, only: pa.Array | None = None) -> pa.Table:
    """A shard's items as published (`only`: just these sample ids)."""
    items = storage.read_parquet(items_uri)
    if only is not None:
        items = items.filter(pc.is_in(items.column("sample_id"), only))
    # no token of a source URL in what is published (group ids name the media they group)
    return redact_columns(items, texts=("group_id",))


@dataclass(frozen=True)
class PlannedTar:
    name: str  # e.g. train/image-000000.tar
    split: str
    modality: str
    items: int
    shards: list[int]  # the work shards (indexes into the plan's sources) its items come from


@dataclass(frozen=True)
class TarPlan(Record):
    dir: str  # one member list per tar: `<name>.parquet` (PLAN_SCHEMA)
    tars: list[PlannedTar]
    members: dict[str, list[str]]  # the member suffixes each modality's tars hold (the data card declares them)

    @classmethod
    def restored(cls, recorded: dict, **arguments) -> TarPlan:
        return cls(**{**recorded, "tars": [PlannedTar(**t) for t in recorded["tars"]]})


@dataclass(frozen=True)
class Staged(Record):
    """Files written under `staging_dir` for the commit to move into the version: a tar (with its index rows,
    `n` items), or a shard's embeddings."""

    staging_dir: str
    files: dict[str, dict]  # name in the version -> {bytes, sha256, items}
    index_uri: str | None = None
    n: int = 0

    @property
    def items_in(self) -> int:
        return self.n


@committed(lambda out_dir, **_: storage.join(out_dir, "plan.json"), TarPlan)
def plan_tars(sources: list[tuple[str, str]], config: PublishConfig, out_dir: str) -> TarPlan:
    """Cut every item of the version into tars. `sources`: per work shard, in order, the items that
    reached the split (metadata) and the media file clean wrote. Writes one member list per tar under
    `out_dir`, and returns the tars (name, split, modality, items, shards) and the member suffixes each
    modality has (the data card declares them)."""
    queues: dict[tuple[str, str], list[tuple[str, int, int]]] = defaultdict(list)
    suffixes: dict[str, set[str]] = defaultdict(set)
    tables = [published_items(items_uri) for items_uri, _ in sources]
    shown = _shown(tables)
    pictures = {  # the extension and size of every picture a document shows, for sizing the documents
        r["sample_id"]: (r["media_ext"], _Sized(r["media_size"]))
        for t in tables
        for r in t.filter(pc.is_in(t.column("sample_id"), pa.array(sorted(shown), pa.string())))
        .select(["sample_id", "media_ext", "media_size"])
        .to_pylist()
    }
    for shard, ((_, media_uri), table) in enumerate(zip(sources, tables)):
        items = {row["sample_id"]: row for row in table.to_pylist()}
        media = storage.read_parquet(media_uri, columns=["sample_id", "sidecars"]).to_pylist()
        for entry in media:
            row = items.get(entry["sample_id"])
            if row is None or not published_alone(row):  # dropped after clean, or published in its documents
                continue
            size = _Sized(row["media_size"] or 0)  # the media's size, without reading it
            found = KINDS[row["modality"]].members(row, size, entry["sidecars"], pictures)
            sizes = [(name, len(data)) for name, data in found]
            suffixes[row["modality"]].update(name for name, _ in sizes)
            queue = queues[(row["split"], row["modality"])]
            queue.append((row["sample_id"], shard, sum(member_bytes(n) for _, n in sizes)))
    tars = []
    for split in SPLITS:
        for modality in KINDS:
            queue = queues.get((split, modality), [])
            budget = max(config.shard_max_bytes - TAR_TAIL, 1)
            ranges = bounded_ranges([n for _, _, n in queue], config.shard_max_items, budget) if queue else []
            for n, (start, end) in enumerate(ranges):
                part = queue[start:end]
                name = tar_name(split, modality, n)
                storage.write_parquet(
                    storage.join(out_dir, name.removesuffix(".tar") + ".parquet"),
                    pa.table({"sample_id": [s for s, _, _ in part], "shard": [i for _, i, _ in part]}, PLAN_SCHEMA),
                )
                shards = sorted({i for _, i, _ in part})
                tars.append(PlannedTar(name, split, modality, len(part), shards))
    return TarPlan(out_dir, tars, {m: sorted(s) for m, s in sorted(suffixes.items())})


def _shown(tables: list[pa.Table]) -> set[str]:
    """The pictures the composite items (documents) of these tables show."""
    composite = pa.array([name for name, kind in KINDS.items() if kind.composite], pa.string())
    found = set()
    for t in tables:
        parts = t.filter(pc.is_in(t.column("modality"), composite)).column("segments").to_pylist()
        found.update(s["image"] for segments in parts for s in segments or [] if s["image"])
    return found


class _Sized:
    """Stands in for a picture's bytes where only their length is asked."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def _pictures(needed: set[str], sources: list[tuple[str, str]]) -> dict[str, tuple[str, pa.Buffer]]:
    """The pictures these documents show, from the media files of whichever shards hold them."""
    found = {}
    for items_uri, media_uri in sources:
        items = storage.read_parquet(items_uri, columns=["sample_id", "media_ext"]).to_pylist()
        extensions = {r["sample_id"]: r["media_ext"] for r in items if r["sample_id"] in needed}
        for batch in storage.iter_parquet_batches(media_uri, MEDIA_READ_ROWS) if extensions else ():
            media = batch.column("media_bytes")
            for i, sample_id in enumerate(batch.column("sample_id").to_pylist()):
                if sample_id in extensions:
                    found[sample_id] = (extensions[sample_id], media[i].as_buffer())
    return found


class _HashingWriter:
    """Counts and hashes what passes through, so a streamed file's manifest entry needs no re-read."""

    def __init__(self, f):
        self.f, self.size, self.sha = f, 0, hashlib.sha256()

    def write(self, data) -> int:
        self.size += len(data)
        self.sha.update(data)
        return self.f.write(data)

    def entry(self) -> dict:
        return {"bytes": self.size, "sha256": self.sha.hexdigest()}


def _add(tar: tarfile.TarFile, name: str, data: bytes | pa.Buffer) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, pa.BufferReader(data))


@committed(lambda tar, staging_dir, **_: storage.join(staging_dir, tar.name.removesuffix(".tar") + ".json"), Staged)
def write_tar(tar: PlannedTar, plan_dir: str, sources: list[tuple[str, str]], staging_dir: str) -> Staged:
    """Write one planned tar, streamed, and its index rows, under `staging_dir`; skipped once staged."""
    name = tar.name
    planned = storage.read_parquet(storage.join(plan_dir, name.removesuffix(".tar") + ".parquet"))
    order = planned.column("sample_id").to_pylist()
    pictures = {}
    if KINDS[tar.modality].composite:  # held in memory for the tar: at most what it holds
        pictures = _pictures(_shown([published_items(sources[s][0]) for s in tar.shards]), sources)
    written, index_parts = [], []
    with storage.open_output(storage.join(staging_dir, name)) as f:
        out = _HashingWriter(f)
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as archive:
            for shard in tar.shards:
                items_uri, media_uri = sources[shard]
                items = published_items(items_uri, only=planned.column("sample_id"))  # this tar's, in shard order
                position = {sid: i for i, sid in enumerate(items.column("sample_id").to_pylist())}
                rows, taken = items.to_pylist(), []
                for batch in storage.iter_parquet_batches(media_uri, MEDIA_READ_ROWS):
                    # the media stays in Arrow's buffers (no Python copy of it): the tar reads it from there
                    media = batch.column("media_bytes")
                    columns = [batch.column(c).to_pylist() for c in ("sample_id", "sidecars")]
                    for i, (sample_id, sidecars) in enumerate(zip(*columns)):
                        if sample_id not in position:
                            continue
                        row = rows[position[sample_id]]
                        kind = KINDS[row["modality"]]
                        data = media[i].as_buffer() if kind.has_media else None
                        if kind.has_media and len(data) != row["media_size"]:
                            raise RuntimeError(
                                f"{sample_id}: media is {len(data)} bytes, the index says {row['media_size']}"
                            )
                        found = kind.members(row, data, sidecars, pictures)
                        for suffix, member in found:
                            _add(archive, f"{sample_id}.{suffix}", member)
                        written.append(sample_id)
                        taken.append(position[sample_id])
                index_parts.append(items.take(taken))
    if written != order:
        raise RuntimeError(f"{name}: wrote {len(written)} of {len(order)} planned items, or not in plan order")
    index = pa.concat_tables(index_parts).drop_columns(INDEX_DROP)
    index = index.append_column("tar", pa.array([name] * index.num_rows, pa.string()))
    index = index.append_column("key", index.column("sample_id"))
    index_uri = storage.join(staging_dir, name.removesuffix(".tar") + ".index.parquet")
    storage.write_parquet(index_uri, index)
    return Staged(staging_dir, {name: {**out.entry(), "items": len(written)}}, index_uri, len(written))
