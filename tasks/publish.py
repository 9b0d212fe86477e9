"""Publish: an immutable dataset version that training code loads without mmetl.

    versions/<partition>/
      train/ val/ test/     <shard>.tar: WebDataset members <key>.<jpg|flac|mp4>, <key>.txt, <key>.json
                            index.parquet: every Sample column but the bytes, plus tar + key
      rejects.parquet       every dropped row of every stage, with its reason
      stats.json            counts per split and modality, and the funnel
      manifest.json         written last: the version exists once it does

Tars are byte-for-byte deterministic (sorted members, fixed mtime/owner), so the same build gives
the same files on a local disk and on S3.
"""

from __future__ import annotations

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


def publish_shard(shard_uri: str, version_dir: str, index_uri: str) -> dict:
    """Write this work shard's rows as one tar per split; its index rows go to `index_uri`."""
    shard = shard_uri.rsplit("/", 1)[-1].removesuffix(".parquet")
    marker = index_uri.removesuffix(".parquet") + ".json"
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
        storage.write_bytes(storage.join(version_dir, tar_name), data)
        files[tar_name] = len(data)
        index = rows_table.drop_columns(INDEX_DROP)
        parts.append(index.append_column("tar", pa.array([tar_name] * index.num_rows, pa.string()))
                     .append_column("key", index.column("sample_id")))
    if parts:
        storage.write_parquet(index_uri, pa.concat_tables(parts))
    result = {"shard": shard, "index_uri": index_uri if parts else None, "files": files, "n": table.num_rows}
    storage.write_json(marker, result)
    return result


def commit_version(layout: storage.Layout, published: list[dict], reject_uris: list[str], funnel: list[dict],
                   recipe: dict, extra: dict | None = None) -> dict:
    """Merge the per-shard indexes, write rejects and stats, and commit with the manifest, last."""
    if storage.exists(layout.version_manifest):
        return storage.read_json(layout.version_manifest)
    check_funnel(funnel)
    version = layout.version
    files = {name: size for p in published for name, size in p["files"].items()}
    indexes = [storage.read_parquet(p["index_uri"]) for p in published if p["index_uri"]]
    index = pa.concat_tables(indexes) if indexes else None
    splits = {}
    for split in SPLITS:
        part = index.filter(pc.equal(index.column("split"), split)).sort_by("sample_id") if index is not None else None
        if part is None or part.num_rows == 0:
            continue
        name = f"{split}/index.parquet"
        storage.write_parquet(storage.join(version, name), part)
        splits[split] = {
            "samples": part.num_rows,
            "groups": len(set(part.column("group_id").to_pylist())),
            "modalities": dict(sorted(Counter(part.column("modality").to_pylist()).items())),
            "tars": sorted(f for f in files if f.startswith(f"{split}/")),
            "index": name,
        }
    rejects = pa.concat_tables([storage.read_parquet(u).cast(REJECT_SCHEMA) for u in reject_uris]) if reject_uris \
        else REJECT_SCHEMA.empty_table()
    rejects = rejects.sort_by([("stage", "ascending"), ("sample_id", "ascending")])
    storage.write_parquet(storage.join(version, "rejects.parquet"), rejects)

    stats = {"splits": splits, "funnel": funnel, "rejects_by_reason": _count(rejects.column("reason").to_pylist()),
             "hours": _hours(index)}
    storage.write_json(storage.join(version, "stats.json"), stats)
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
