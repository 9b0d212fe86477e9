"""Publish: an immutable dataset version that training code loads without mmetl.

    versions/<partition>/
      train/ val/ test/     <shard>.tar: WebDataset members per item: <key>.<jpg|flac|mp4|mkv|avi> (the
                            media, once), <key>.json (metadata and all texts), <key>.txt (the first text)
                            index.parquet: one row per item, every Sample column but the bytes, with
                            the `texts` list, plus tar + key
      rejects.parquet       every dropped item of every stage, with its reason
      dropped_texts.parquet every text removed from an item that stayed, with its reason
      stats.json            counts per split and modality, texts, bytes, hours, and the funnel
      manifest.json         written last: the version exists once it does

Tars stream straight from the media clean wrote (one batch in memory at a time) and are
byte-for-byte deterministic (members in shard order, fixed mtime/owner), so the same build gives
the same files on a local disk and on S3. They are staged in the build's work folder and moved into
the version only by `commit_version`, which refuses a version that another build already owns: a
published version is never touched again. The manifest lists every file with its size and sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import json
import tarfile
from collections import Counter, defaultdict
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from . import storage
from .dedupe_index import WITHDRAWN_SCHEMA
from .recipe import stage_code_digest
from .redact import redact_columns
from .schema import DROPPED_TEXT_SCHEMA, EMBEDDING_SCHEMA, REJECT_SCHEMA, SPLITS, scores_dict

INDEX_DROP = ["media_bytes", "sidecars"]
# what a loader needs beside the media; the rest of the lineage (annotation rows, run) is in index.parquet
MEMBER_META = [
    "sample_id",
    "group_id",
    "source",
    "modality",
    "media_size",
    "width",
    "height",
    "duration_s",
    "sample_rate",
    "channels",
    "fps",
    "num_frames",
    "video_codec",
    "audio_codec",
    "audio_duration_s",
    "sha256",
    "phash",
    "split",
    "source_uri",
]
MEMBER_TEXT = ["text", "kind", "source", "lang", "flags", "align_score"]
MEDIA_READ_ROWS = 16  # rows per read from the media file; memory is bounded by its row groups (one batch)


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


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def member_json(row: dict) -> bytes:
    meta = {k: row[k] for k in MEMBER_META if row.get(k) is not None}
    # a text's counts and language probability, and its unset fields, are left out (index.parquet has
    # them all): the JSON stays within a tar block or two beside the media
    meta["texts"] = [{k: t[k] for k in MEMBER_TEXT if t.get(k) not in (None, [])} for t in row["texts"]]
    meta["scores"] = scores_dict(row)
    if row.get("features"):
        meta["features"] = json.loads(row["features"])
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _file_entry(data: bytes) -> dict:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def publish_shard(
    shard_uri: str, media_uri: str, staging_dir: str, remove_media: bool = False, embeddings_uri: str | None = None
) -> dict:
    """Stage this work shard's items as one tar per split, plus its index rows, under `staging_dir`.

    `shard_uri` holds the items that reached the split (metadata); `media_uri` their media as clean
    wrote it, read one batch at a time. Once staged, the media copy can go (`remove_media`). With
    `embeddings_uri` (the score stage's), the published items' embeddings are staged per split too.
    """
    shard = shard_uri.rsplit("/", 1)[-1].removesuffix(".parquet")
    index_uri = storage.join(staging_dir, f"{shard}.index.parquet")
    marker = storage.join(staging_dir, f"{shard}.json")
    if storage.exists(marker):
        return storage.read_json(marker)
    # no token of a source URL in what is published (group ids name the media they group)
    items = redact_columns(storage.read_parquet(shard_uri), texts=("group_id",))
    by_id = {row["sample_id"]: row for row in items.to_pylist()}
    writers: dict[str, tuple[tarfile.TarFile, _HashingWriter]] = {}
    written = 0
    with contextlib.ExitStack() as stack:
        for batch in storage.iter_parquet_batches(media_uri, MEDIA_READ_ROWS):
            columns = [batch.column(c).to_pylist() for c in ("sample_id", "media_bytes", "sidecars")]
            for sample_id, data, sidecars in zip(*columns):
                row = by_id.get(sample_id)
                if row is None:  # dropped after clean
                    continue
                split = row["split"]
                if split not in writers:
                    out = _HashingWriter(
                        stack.enter_context(storage.open_output(storage.join(staging_dir, f"{split}/{shard}.tar")))
                    )
                    tar = stack.enter_context(tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT))
                    writers[split] = (tar, out)
                tar = writers[split][0]
                _add(tar, f"{sample_id}.{row['media_ext']}", data)
                for sidecar in sidecars or []:
                    _add(tar, f"{sample_id}.{sidecar['name']}", sidecar["data"])
                _add(tar, f"{sample_id}.json", member_json(row))
                _add(tar, f"{sample_id}.txt", row["texts"][0]["text"].encode())
                written += 1
        for tar, _ in writers.values():
            tar.close()  # ends the archive before its file is committed
    if written != len(by_id):
        raise RuntimeError(f"{shard}: {len(by_id) - written} kept items have no media in {media_uri}")

    files = {f"{split}/{shard}.tar": out.entry() for split, (_, out) in sorted(writers.items())}
    if embeddings_uri:
        files.update(_stage_embeddings(embeddings_uri, by_id, staging_dir, shard))
    index = items.drop_columns(INDEX_DROP)
    index = index.append_column(
        "tar", pc.binary_join_element_wise(index.column("split"), pa.scalar(f"/{shard}.tar"), "")
    )
    index = index.append_column("key", index.column("sample_id"))
    storage.write_parquet(index_uri, index)
    result = {"shard": shard, "staging_dir": staging_dir, "index_uri": index_uri, "files": files, "n": items.num_rows}
    storage.write_json(marker, result)
    if remove_media:
        storage.remove(media_uri)
    return result


def _stage_embeddings(uri: str, items: dict[str, dict], staging_dir: str, shard: str) -> dict[str, dict]:
    """The published items' embeddings, with only the texts they kept, as `<split>/<shard>.embeddings.parquet`."""
    rows: dict[str, list[dict]] = {}
    for row in storage.read_parquet(uri).to_pylist():
        item = items.get(row["sample_id"])
        if item is None:  # rejected after scoring
            continue
        kept = {t["text"] for t in item["texts"]}
        rows.setdefault(item["split"], []).append({**row, "texts": [t for t in row["texts"] if t["text"] in kept]})
    files = {}
    for split, part in sorted(rows.items()):
        name = f"{split}/{shard}.embeddings.parquet"
        table = pa.Table.from_pylist(part, schema=EMBEDDING_SCHEMA)
        files[name] = _write(storage.join(staging_dir, name), storage.parquet_bytes(table))
    return files


def commit_version(
    layout: storage.Layout,
    published: list[dict],
    reject_uris: list[str],
    dropped_text_uris: list[str],
    funnel: list[dict],
    recipe: dict,
    extra: dict | None = None,
    withdrawn_uri: str | None = None,
    dedupe_report: dict | None = None,
    align_report: dict | None = None,
) -> dict:
    """Move the staged tars in, write the indexes, rejects and stats, and commit with the manifest, last.

    Safe to rerun after a crash at any point: a tar already moved is not moved again.
    """
    if storage.exists(layout.version_manifest):
        return check_owner(layout, storage.read_json(layout.version_manifest))
    check_funnel(funnel)
    claim_version(layout)
    version = layout.version
    files = {}
    for p in published:
        for name, entry in p["files"].items():
            staged = storage.join(p["staging_dir"], name)
            if storage.exists(staged):
                storage.move(staged, storage.join(version, name))
            files[name] = entry
    indexes = [storage.read_parquet(p["index_uri"]) for p in published]
    index = pa.concat_tables(indexes) if indexes else None
    splits = {}
    for split in SPLITS:
        part = index.filter(pc.equal(index.column("split"), split)).sort_by("sample_id") if index is not None else None
        if part is None or part.num_rows == 0:
            continue
        name = f"{split}/index.parquet"
        files[name] = _write(storage.join(version, name), storage.parquet_bytes(part))
        tars = sorted(f for f in files if f.startswith(f"{split}/") and f.endswith(".tar"))
        splits[split] = {
            "samples": part.num_rows,
            "texts": int(pc.sum(pc.list_value_length(part.column("texts"))).as_py()),
            "groups": pc.count_distinct(part.column("group_id")).as_py(),
            "modalities": _count(part.column("modality").to_pylist()),
            "media_bytes": int(pc.sum(part.column("media_size")).as_py()),
            "tar_bytes": sum(files[t]["bytes"] for t in tars),
            "tars": tars,
            "index": name,
        }
    rejects = _gather(reject_uris, REJECT_SCHEMA).sort_by([("stage", "ascending"), ("sample_id", "ascending")])
    rejects = redact_columns(rejects, texts=("detail", "group_id"))
    files["rejects.parquet"] = _write(storage.join(version, "rejects.parquet"), storage.parquet_bytes(rejects))
    dropped = _gather(dropped_text_uris, DROPPED_TEXT_SCHEMA).sort_by(
        [("stage", "ascending"), ("sample_id", "ascending"), ("reason", "ascending"), ("text", "ascending")]
    )
    files["dropped_texts.parquet"] = _write(
        storage.join(version, "dropped_texts.parquet"), storage.parquet_bytes(dropped)
    )

    # what this version withdraws from partitions built before it though newer (see tasks/dedupe_index.py)
    withdrawn = storage.read_parquet(withdrawn_uri) if withdrawn_uri else WITHDRAWN_SCHEMA.empty_table()
    files["withdrawn.parquet"] = _write(storage.join(version, "withdrawn.parquet"), storage.parquet_bytes(withdrawn))

    stats = {
        "splits": splits,
        "funnel": funnel,
        "rejects_by_reason": _count(rejects.column("reason").to_pylist()),
        "texts_dropped_by_reason": _count(dropped.column("reason").to_pylist()),
        "hours": _hours(index),
        "text_languages": _languages(index),
        "dedupe": dedupe_report or {},
        **fetch_failures(rejects),
        **({"align": align_report} if align_report else {}),  # models and thresholds that decided
    }
    files["stats.json"] = _write(
        storage.join(version, "stats.json"), json.dumps(stats, indent=2, sort_keys=True).encode()
    )
    manifest = {
        "dataset": layout.dataset,
        "partition": layout.partition,
        "build_key": layout.build_key,
        "recipe": recipe,
        "splits": splits,
        "samples": sum(s["samples"] for s in splits.values()),
        "texts": sum(s["texts"] for s in splits.values()),
        "rejected": rejects.num_rows,
        "texts_dropped": dropped.num_rows,
        "withdrawn": withdrawn.num_rows,
        "files": dict(sorted(files.items())),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "format": "webdataset+parquet/v2",
        "code": code_identity(),  # with `recipe`: what it takes to build this version again
        **({"align": align_report} if align_report else {}),
        **(extra or {}),
    }
    storage.write_json(layout.version_manifest, manifest)  # the commit point, last
    return manifest


def code_identity() -> dict:
    """The mmetl release and the digest of the stage code (tasks/) that wrote a version."""
    try:
        release = importlib.metadata.version("mmetl")
    except importlib.metadata.PackageNotFoundError:
        release = None
    return {"mmetl": release, "stage_code_sha256": stage_code_digest()}


def discard_work(layout: storage.Layout) -> None:
    """After the manifest: the work folder (a copy of the media, the shards) is no longer needed;
    a rerun learns from the manifest that the version exists."""
    storage.remove(layout.work, recursive=True)
    partition_dir = layout.work.rsplit("/", 1)[0]
    if not storage.list_files(partition_dir):  # no other build's work left beside it
        storage.remove(partition_dir, recursive=True)


def _gather(uris: list[str], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables([storage.read_parquet(u).cast(schema) for u in uris]) if uris else schema.empty_table()


def claim_version(layout: storage.Layout) -> None:
    """Take the partition's version for this build, atomically; rerunning the same build may resume."""
    if storage.create_exclusive(layout.version_claim, json.dumps({"build_key": layout.build_key}).encode()):
        leftovers = [f for f in storage.list_files(layout.version) if f != "_claim.json"]
        if leftovers:  # an abandoned build's files: publishing beside them would mix two builds
            storage.remove(layout.version_claim)
            raise VersionExists(
                f"{layout.version} holds files of an abandoned build ({leftovers[0]}, ...);"
                " delete the whole folder to publish this partition again"
            )
        return
    owner = storage.read_json(layout.version_claim)["build_key"]
    if owner != layout.build_key:
        raise VersionExists(
            f"{layout.version} is being published by build {owner} (this is build {layout.build_key}: another"
            " recipe or code version). Publish under a new partition name, or, if that build was abandoned"
            f" before it committed, delete the whole folder {layout.version}"
        )


def check_owner(layout: storage.Layout, manifest: dict) -> dict:
    if manifest["build_key"] != layout.build_key:
        raise VersionExists(
            f"{layout.version} was already published by build {manifest['build_key']} (this is build"
            f" {layout.build_key}: another recipe or mmetl version); versions are immutable:"
            " publish under a new partition name"
        )
    return manifest


class VersionExists(RuntimeError):
    """The partition's version was published by another build."""


def _write(uri: str, data: bytes) -> dict:
    storage.write_bytes(uri, data)
    return _file_entry(data)


def check_funnel(funnel: list[dict]) -> None:
    """in = kept + rejected for every stage, and each stage takes in exactly what the one before kept
    (the plan keeps annotation rows and hands on the items they form)."""
    previous = None
    for step in funnel:
        if step["in"] != step["kept"] + step["rejected"]:
            raise RuntimeError(f"{step['stage']}: in={step['in']} != kept={step['kept']} + rejected={step['rejected']}")
        handed_on = previous and previous.get("items", previous["kept"])
        if previous is not None and step["in"] != handed_on:
            raise RuntimeError(
                f"{step['stage']} took in {step['in']} items but {previous['stage']} handed on {handed_on}"
            )
        previous = step


def fetch_failures(rejects: pa.Table, top: int = 10) -> dict:
    """Download failures by source and category, and the hosts that failed most (where to look first)."""
    by_source: dict[str, Counter] = defaultdict(Counter)
    hosts: Counter = Counter()
    for row in rejects.select(["source", "reason", "source_uri"]).to_pylist():
        if row["reason"].startswith("fetch:"):
            by_source[row["source"]][row["reason"]] += 1
            hosts[urlsplit(row["source_uri"] or "").hostname or "?"] += 1
    return {
        "fetch_failures_by_source": {s: dict(sorted(c.items())) for s, c in sorted(by_source.items())},
        "top_failing_hosts": [[h, n] for h, n in hosts.most_common(top)],
    }


def _count(values: list[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def _languages(index: pa.Table | None, sure: float = 0.5) -> dict[str, int]:
    """Published texts per language; `und` where the identifier was less than `sure` of it."""
    if index is None or index.num_rows == 0:
        return {}
    texts = pc.list_flatten(index.column("texts"))
    langs = pc.if_else(
        pc.greater_equal(pc.fill_null(pc.struct_field(texts, "lang_score"), 0), sure),
        pc.struct_field(texts, "lang"),
        "und",
    )
    return _count(pc.fill_null(langs, "und").to_pylist())


def _hours(index: pa.Table | None) -> dict[str, float]:
    hours: dict[str, float] = defaultdict(float)
    if index is not None:
        for modality, seconds in zip(index.column("modality").to_pylist(), index.column("duration_s").to_pylist()):
            if seconds:
                hours[modality] += seconds / 3600
    return {k: round(v, 6) for k, v in sorted(hours.items())}
