"""The one Sample record (an item) and the Reject and DroppedText records, as Arrow schemas.

An item is one media file (image, audio clip or video) with every text that describes it: the five
COCO captions of a picture are one item with five texts, not five rows. A document (a web page or paper
of text with pictures between) is an item too: its passages are its texts, its pictures are image items
of their own (`part_of` it), and `segments` says their order. Identical media found under
several names or in several sources becomes one item with the union of their texts. `group_id`
names what must never be split apart (clips of one video, copies of one picture).

Media bytes travel in a row only inside the task that collects and cleans them; after clean they
are written once, to `<shard>.media.parquet` (MEDIA_SCHEMA) beside the work shard, and every later
step reads and writes metadata only.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

SPLITS = ("train", "val", "test")
TEXT_KINDS = (
    "caption", "title", "subtitle", "transcript", "speaker", "label", "region", "answer", "prompt", "passage",
    "ocr",  # what clean read in the picture itself (clean.image.ocr: read)
    "asr", "synthetic",  # what the build wrote itself: a transcript (generate.transcript), a caption (generate.caption)
)  # fmt: skip
# texts that describe the whole media in words of their own (caption dedupe compares them); not a class
# label, a region's phrase, a prompt or a document's passage, which many different items share
# (a generated caption is not one: one model describes different pictures in the same few words)
CAPTION_KINDS = frozenset({"caption", "title", "subtitle", "transcript", "answer"})

# One text of an item: what it says, what kind of text it is, and which source gave it.
# One text of an item. Clean fills the rest (tasks/media/text.py): language and its probability,
# counts, and flags (markup, repaired, url, email, phone, boilerplate) that filters decide on.
TEXT = pa.struct(
    [
        pa.field("text", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("source", pa.string()),
        # a timed text (a subtitle cue, a transcript): when it is said, in seconds from the item's start
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("lang", pa.string()),
        pa.field("lang_score", pa.float32()),
        pa.field("words", pa.int32()),
        pa.field("chars", pa.int32()),
        pa.field("flags", pa.list_(pa.string())),
        # with `features.tokenize`: the ids (cut at max_length) and the uncut length
        pa.field("tokens", pa.list_(pa.int32())),
        pa.field("n_tokens", pa.int32()),
        # with `align:` models: the cosine of this text's and its media's embeddings
        pa.field("align_score", pa.float32()),
        # a text the build wrote (kinds asr, synthetic): `<model folder>@<weights sha256, 12>` and, where a
        # prompt asked for it, `+prompt:<its sha256, 12>`
        pa.field("generated_by", pa.string()),
    ]
)
# One measured score. A list of {name, value} rather than a map: every reader (Hugging Face datasets,
# pandas, DuckDB, Spark) takes it, and new filters add scores without changing the schema.
SCORE = pa.struct([pa.field("name", pa.string()), pa.field("value", pa.float64())])

SIDECAR = pa.struct([pa.field("name", pa.string()), pa.field("data", pa.large_binary())])

# One part of a document, in reading order: a passage (`text`, as it is among the document's texts) or
# a picture (`image`: the sample id of its image item). In a published `<key>.json`, `member` names the
# tar member that holds the picture.
SEGMENT = pa.struct([pa.field("text", pa.string()), pa.field("image", pa.string())])

SAMPLE_SCHEMA = pa.schema(
    [
        # identity
        pa.field("sample_id", pa.string(), nullable=False),  # stable across runs: see make_sample_id
        pa.field("source", pa.string(), nullable=False),  # recipe source name
        pa.field("group_id", pa.string(), nullable=False),  # never split apart (same media, one cluster)
        pa.field("modality", pa.string(), nullable=False),  # the name of its kind (tasks/media/kinds/)
        pa.field("texts", pa.list_(TEXT)),
        # media: bytes only in flight between collect and clean (see the module docstring)
        pa.field("media_bytes", pa.large_binary()),
        pa.field("media_ext", pa.string()),  # jpg | flac | mp4 | mkv ...
        pa.field("media_size", pa.int64()),  # bytes: as listed at plan time, then as normalized by clean
        # files clean derives from the media (a log-mel `mel.npy`), published beside it as `<key>.<name>`;
        # in flight with media_bytes. `features` says what they are (JSON: their parameters).
        pa.field("sidecars", pa.list_(SIDECAR)),
        pa.field("features", pa.string()),
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
        pa.field("sha256", pa.string()),  # of the normalized media bytes
        pa.field("phash", pa.string()),  # imagehash.phash, hex; images only
        # raw Chromaprint of an audio clip or a video's track (empty under ~3 s of sound)
        pa.field("audio_fingerprint", pa.list_(pa.uint32())),
        # an audio clip of up to 4 s: a coarse log-mel (frames x 24 bands, dB, int8) for clips too short for Chromaprint
        pa.field("sound_print", pa.list_(pa.int8())),
        # an audio clip's first 4 s: pairs of spectral peaks, hash << 11 | frame (tasks/media/landmarks.py)
        pa.field("sound_landmarks", pa.list_(pa.uint32())),
        pa.field("keyframe_phashes", pa.list_(pa.string())),  # video: pHash of one frame a second, hex
        # scores computed by filters/aligners; thresholds are applied to these, so they can be re-tuned
        pa.field("scores", pa.list_(SCORE)),
        pa.field("split", pa.string()),
        # documents: a document's parts in order; an image item: the documents (sample ids) it is part of
        pa.field("segments", pa.list_(SEGMENT)),
        pa.field("part_of", pa.list_(pa.string())),
        # lineage
        pa.field("source_uri", pa.string()),  # where the media came from: a path, s3:// or http(s):// URL
        # the time window of the source media this item is (AudioCaps' 10 s, a HowTo100M subtitle)
        pa.field("clip_start_s", pa.float64()),
        pa.field("clip_end_s", pa.float64()),
        # a scene clean.video.scenes cut out of a video: which one (0, 1, ... in time order) and the video's sample id
        pa.field("scene_index", pa.int32()),
        pa.field("scene_of", pa.string()),
        # the box of the source image this item is (x, y, width, height: a Visual Genome region)
        pa.field("region", pa.list_(pa.int32())),
        # what the source said about the media beyond its texts (LAION's extra columns, a video's
        # title, uploader, license), as a JSON object: a string every reader takes
        pa.field("meta", pa.string()),
        pa.field("source_rows", pa.list_(pa.int64())),  # rows of the annotation file that name it
        pa.field("partition", pa.string()),
        pa.field("run_id", pa.string()),  # deterministic build key: recipe fingerprint + partition
    ]
)

# Where clean leaves each item's normalized bytes, written once: one file per work shard.
MEDIA_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("media_bytes", pa.large_binary()),
        pa.field("sidecars", pa.list_(SIDECAR)),
    ]
)

# A document's `segments` in its published `<key>.json`: a passage, or a picture and the tar member holding it.
MEMBER_SEGMENT = pa.struct([pa.field("text", pa.string()), pa.field("image", pa.string()),
                            pa.field("member", pa.string())])  # fmt: skip
# a text as a `<key>.json` tar member gives it (each kind's member schema: tasks/media/kinds/base.py)
MEMBER_TEXT = pa.struct(
    [
        TEXT.field(n)
        for n in ("text", "kind", "source", "start_s", "end_s", "lang", "flags", "align_score", "generated_by")
    ]
)


# `align.keep_embeddings` (and `dedupe.semantic`): what the models made of each published item, L2-normalised,
# float16: its media (an image, a video's frames averaged, a clip) and each of its texts, in the item's order;
# with `dedupe.semantic.captions`, the sentence model's embedding of its first caption
EMBEDDING_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("modality", pa.string()),
        pa.field("model", pa.string()),  # the model folder's name
        pa.field("media", pa.list_(pa.float16())),
        pa.field(
            "texts", pa.list_(pa.struct([pa.field("text", pa.string()), pa.field("embedding", pa.list_(pa.float16()))]))
        ),
        pa.field("caption", pa.list_(pa.float16())),
        pa.field("caption_model", pa.string()),
    ]
)

REJECT_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("modality", pa.string()),
        pa.field("texts", pa.list_(TEXT)),
        pa.field("source_uri", pa.string()),
        pa.field("source_rows", pa.list_(pa.int64())),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # "<kind>:<code>", e.g. decode:corrupt
        pa.field("detail", pa.string()),  # human-readable: the exception text, the measured value
        pa.field("duplicate_of", pa.string()),  # the kept item, for duplicate:* reasons
        pa.field("partition", pa.string()),
        pa.field("run_id", pa.string()),
    ]
)

# A text removed from an item that stays (an empty caption among five, a repeated one).
DROPPED_TEXT_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("source", pa.string()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
    ]
)


def table_of(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows (dicts) as a table of this schema; a missing key is null, a key the schema lacks is ignored.

    Column by column with each field's own type: `pa.Table.from_pylist` infers every column's type
    from the values and converts again, 8x slower (17.6 against 2.1 ms for a batch of 256 Samples),
    a cost every stage paid on every batch."""
    return pa.Table.from_arrays([pa.array([row.get(f.name) for row in rows], f.type) for f in schema], schema=schema)


def samples_from_rows(rows: list[dict]) -> pa.Table:
    """Rows (dicts) to a Sample table; missing columns are null, unknown keys are an error."""
    unknown = {k for row in rows for k in row} - set(SAMPLE_SCHEMA.names)
    if unknown:
        raise KeyError(f"not Sample columns: {sorted(unknown)}")
    return table_of(rows, SAMPLE_SCHEMA)


def check_reason(reason: str) -> str:
    if ":" not in reason:
        raise ValueError(f"reject reasons are '<kind>:<code>', got {reason!r}")
    return reason


def reject_row(row: dict, stage: str, reason: str, detail: str | None = None, duplicate_of: str | None = None) -> dict:
    """The Reject record of a dropped item (its media bytes are not kept: source_uri says where they came from)."""
    out = {name: row.get(name) for name in REJECT_SCHEMA.names}
    out.update(stage=stage, reason=check_reason(reason), detail=detail, duplicate_of=duplicate_of)
    return out


def scores_dict(row: dict) -> dict[str, float]:
    return {s["name"]: s["value"] for s in row.get("scores") or []}


def with_scores(row: dict, **scores: float) -> dict:
    """The row with these scores set (others kept), in a stable order."""
    merged = {**scores_dict(row), **scores}
    return {**row, "scores": [{"name": k, "value": float(v)} for k, v in sorted(merged.items())]}


def with_feature(row: dict, name: str, value) -> dict:
    """The row with `features[name]` set (its JSON object of what a stage derived or why it skipped the item)."""
    features = json.loads(row["features"]) if row.get("features") else {}
    return {**row, "features": json.dumps({**features, name: value}, separators=(",", ":"))}


def make_sample_id(source: str, media_key: str) -> str:
    """Stable id of an item: its source and its media path as the annotation wrote it.

    It does not depend on where the corpus sits today, on line numbers or on captions, so moving a
    corpus, inserting a line or adding a caption keeps every id (and every split).
    """
    return hashlib.sha1(f"{source}\x1f{media_key}".encode()).hexdigest()[:20]
