"""Publish: an immutable dataset version that training code loads without mmetl.

    versions/<partition>/
      train/ val/ test/     <shard>.tar: WebDataset members <key>.<jpg|flac|mp4>, <key>.txt, <key>.json
                            index.parquet: every Sample column but the bytes, plus tar + key
      rejects.parquet       every dropped row of every stage, with its reason
      stats.json            counts per split and modality, and the funnel
      manifest.json         written last: the version exists once it does

Tars are byte-for-byte deterministic (sorted members, fixed mtime/owner), so the same build gives
the same files on a local disk and on S3. They are staged in the build's work folder and moved into
the version only by `commit_version`, which refuses a version that another build already owns: a
published version is never touched again. The manifest lists every file with its size and sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from . import storage
from .schema import REJECT_SCHEMA, SPLITS

INDEX_DROP = ["media_bytes"]
MEMBER_META = ["sample_id", "group_id", "source", "modality", "width", "height", "duration_s", "sample_rate",
               "channels", "fps", "num_frames", "video_codec", "audio_codec", "audio_duration_s", "sha256",
               "phash", "scores", "split", "source_uri", "partition", "run_id"]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _tar_bytes(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for row in rows:
            key = row["sample_id"]
            meta = {k: row[k] for k in MEMBER_META}
            meta["scores"] = dict(meta["scores"] or [])
            _add(tar, f"{key}.{row['media_ext']}", row["media_bytes"])
            _add(tar, f"{key}.txt", row["text"].encode())
            _add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode())
    return buf.getvalue()


def _file_entry(data: bytes) -> dict:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def publish_shard(shard_uri: str, staging_dir: str) -> dict:
    """Stage this work shard's rows as one tar per split, plus its index rows, under `staging_dir`."""
    shard = shard_uri.rsplit("/", 1)[-1].removesuffix(".parquet")
    index_uri = storage.join(staging_dir, f"{shard}.index.parquet")
    marker = storage.join(staging_dir, f"{shard}.json")
    if storage.exists(marker):
        return storage.read_json(marker)
    table = storage.read_parquet(shard_uri).sort_by("sample_id")
    parts, files = [], {}
    for split in SPLITS:
        rows_table = table.filter(pc.equal(table.column("split"), split))
        if rows_table.num_rows == 0:
            continue
        tar_name = f"{split}/{shard}.tar"
        data = _tar_bytes(rows_table.to_pylist())
        storage.write_bytes(storage.join(staging_dir, tar_name), data)
        files[tar_name] = _file_entry(data)
        index = rows_table.drop_columns(INDEX_DROP)
        parts.append(index.append_column("tar", pa.array([tar_name] * index.num_rows, pa.string()))
                     .append_column("key", index.column("sample_id")))
    if parts:
        storage.write_parquet(index_uri, pa.concat_tables(parts))
    result = {"shard": shard, "staging_dir": staging_dir, "index_uri": index_uri if parts else None,
              "files": files, "n": table.num_rows}
    storage.write_json(marker, result)
    return result


def commit_version(layout: storage.Layout, published: list[dict], reject_uris: list[str], funnel: list[dict],
                   recipe: dict, extra: dict | None = None) -> dict:
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
    indexes = [storage.read_parquet(p["index_uri"]) for p in published if p["index_uri"]]
    index = pa.concat_tables(indexes) if indexes else None
    splits = {}
    for split in SPLITS:
        part = index.filter(pc.equal(index.column("split"), split)).sort_by("sample_id") if index is not None else None
        if part is None or part.num_rows == 0:
            continue
        name = f"{split}/index.parquet"
        files[name] = _write(storage.join(version, name), storage.parquet_bytes(part))
        splits[split] = {
            "samples": part.num_rows,
            "groups": len(set(part.column("group_id").to_pylist())),
            "modalities": dict(sorted(Counter(part.column("modality").to_pylist()).items())),
            "tars": sorted(f for f in files if f.startswith(f"{split}/") and f.endswith(".tar")),
            "index": name,
        }
    rejects = pa.concat_tables([storage.read_parquet(u).cast(REJECT_SCHEMA) for u in reject_uris]) if reject_uris \
        else REJECT_SCHEMA.empty_table()
    rejects = rejects.sort_by([("stage", "ascending"), ("sample_id", "ascending")])
    files["rejects.parquet"] = _write(storage.join(version, "rejects.parquet"), storage.parquet_bytes(rejects))

    stats = {"splits": splits, "funnel": funnel, "rejects_by_reason": _count(rejects.column("reason").to_pylist()),
             "hours": _hours(index)}
    files["stats.json"] = _write(storage.join(version, "stats.json"),
                                 json.dumps(stats, indent=2, sort_keys=True).encode())
    manifest = {
        "dataset": layout.dataset,
        "partition": layout.partition,
        "build_key": layout.build_key,
        "recipe": recipe,
        "splits": splits,
        "samples": sum(s["samples"] for s in splits.values()),
        "rejected": rejects.num_rows,
        "files": dict(sorted(files.items())),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "format": "webdataset+parquet/v1",
        **(extra or {}),
    }
    storage.write_json(layout.version_manifest, manifest)  # the commit point, last
    return manifest


def claim_version(layout: storage.Layout) -> None:
    """Take the partition's version for this build, atomically; rerunning the same build may resume."""
    if storage.create_exclusive(layout.version_claim, json.dumps({"build_key": layout.build_key}).encode()):
        leftovers = [f for f in storage.list_files(layout.version) if f != "_claim.json"]
        if leftovers:  # an abandoned build's files: publishing beside them would mix two builds
            storage.remove(layout.version_claim)
            raise VersionExists(f"{layout.version} holds files of an abandoned build ({leftovers[0]}, ...);"
                                " delete the whole folder to publish this partition again")
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
    """in = kept + rejected for every stage, and each stage takes in exactly what the one before kept."""
    previous = None
    for step in funnel:
        if step["in"] != step["kept"] + step["rejected"]:
            raise RuntimeError(f"{step['stage']}: in={step['in']} != kept={step['kept']} + rejected={step['rejected']}")
        if previous is not None and step["in"] != previous["kept"]:
            raise RuntimeError(f"{step['stage']} took in {step['in']} rows but {previous['stage']} kept {previous['kept']}")
        previous = step


def _count(values: list[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def _hours(index: pa.Table | None) -> dict[str, float]:
    hours: dict[str, float] = defaultdict(float)
    if index is not None:
        for modality, seconds in zip(index.column("modality").to_pylist(), index.column("duration_s").to_pylist()):
            if seconds:
                hours[modality] += seconds / 3600
    return {k: round(v, 6) for k, v in sorted(hours.items())}
