"""The one Sample record and the one Reject record, as Arrow schemas. Every stage reads and writes these.

A row is one training example: one piece of media (image, audio clip or video) and one caption.
Several captions of one image are several rows sharing `group_id`; a group never straddles splits.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

MODALITIES = ("image", "audio", "video")
SPLITS = ("train", "val", "test")

SAMPLE_SCHEMA = pa.schema(
    [
        # identity
        pa.field("sample_id", pa.string(), nullable=False),  # stable across runs: see make_sample_id
        pa.field("source", pa.string(), nullable=False),  # recipe source name
        pa.field("group_id", pa.string(), nullable=False),  # never split apart (same media, one cluster)
        pa.field("modality", pa.string(), nullable=False),  # one of MODALITIES
        pa.field("text", pa.string()),
        # media: bytes inline (normalized by clean), plus the extension they are published under
        pa.field("media_bytes", pa.large_binary()),
        pa.field("media_ext", pa.string()),  # jpg | png | flac | mp4 ...
        # media facts, filled by clean (null where they do not apply to the modality)
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("duration_s", pa.float64()),  # audio clip, or video stream
        pa.field("sample_rate", pa.int32()),  # audio clip, or the video's audio track
        pa.field("channels", pa.int32()),
        pa.field("fps", pa.float64()),
        pa.field("num_frames", pa.int32()),
        pa.field("video_codec", pa.string()),
        pa.field("audio_codec", pa.string()),
        pa.field("audio_duration_s", pa.float64()),  # a video's audio track; null when it has none
        # hashes
        pa.field("sha256", pa.string()),  # of media_bytes
        pa.field("phash", pa.string()),  # imagehash.phash, hex; images only
        # scores computed by filters/aligners; thresholds are applied to these, so they can be re-tuned
        pa.field("scores", pa.map_(pa.string(), pa.float64())),
        pa.field("split", pa.string()),
        # lineage
        pa.field("source_uri", pa.string()),  # where the media came from
        pa.field("source_row", pa.int64()),  # row of the annotation file it came from
        pa.field("partition", pa.string()),
        pa.field("run_id", pa.string()),  # deterministic build key: recipe fingerprint + partition
    ]
)

REJECT_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("modality", pa.string()),
        pa.field("text", pa.string()),
        pa.field("source_uri", pa.string()),
        pa.field("source_row", pa.int64()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # "<stage>:<code>", e.g. decode:corrupt
        pa.field("detail", pa.string()),  # human-readable: the exception text, the measured value
        pa.field("partition", pa.string()),
        pa.field("run_id", pa.string()),
    ]
)


def samples_from_rows(rows: list[dict]) -> pa.Table:
    """Rows (dicts) to a Sample table; missing columns are null, unknown keys are an error."""
    unknown = {k for row in rows for k in row} - set(SAMPLE_SCHEMA.names)
    if unknown:
        raise KeyError(f"not Sample columns: {sorted(unknown)}")
    return pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA)


def rejects_from(samples: pa.Table, stage: str, reasons: list[str], details: list[str | None]) -> pa.Table:
    """Reject rows for `samples` (media bytes are not kept: the source_uri says where they came from)."""
    bad = [r for r in reasons if ":" not in r]
    if bad:
        raise ValueError(f"reject reasons are '<kind>:<code>', got {bad[:3]}")
    columns = {name: samples.column(name) for name in REJECT_SCHEMA.names if name in samples.column_names}
    n = samples.num_rows
    columns["stage"] = pa.array([stage] * n, pa.string())
    columns["reason"] = pa.array(reasons, pa.string())
    columns["detail"] = pa.array(details, pa.string())
    return pa.table({name: columns[name] for name in REJECT_SCHEMA.names}, schema=REJECT_SCHEMA)


def make_sample_id(source: str, source_key: str, text: str | None) -> str:
    """Stable id from where the sample came from, so reruns and resumed runs agree on it."""
    digest = hashlib.sha1(f"{source}\x1f{source_key}\x1f{text or ''}".encode()).hexdigest()
    return digest[:20]
