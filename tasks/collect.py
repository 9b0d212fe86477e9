"""Collect: turn annotation files (or folders of media + sidecar captions) into work shards of items.

Two phases. `plan_collect` reads every source once, validates every row, gathers the rows that name
one media file into one item with all their texts, and writes shards of items that reference their
media (no bytes yet); broken rows become `collect:bad_row` rejects. Then `CollectStage` runs per
shard and reads each item's file into the row.
"""

from __future__ import annotations

import json
import math
import posixpath

import pyarrow as pa

from . import storage
from .engine import bounded_ranges
from .groups import UnionFind
from .recipe import ShardConfig, SourceConfig
from .schema import MODALITIES, REJECT_SCHEMA, make_sample_id, samples_from_rows
from .stage import Reject, RowStage

MEDIA_EXTENSIONS = {
    "image": {"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"},
    "audio": {"flac", "wav", "mp3", "ogg", "opus", "m4a"},
    "video": {"mp4", "mov", "webm", "mkv", "avi"},
}


def _resolve(base: str, media: str) -> str:
    if "://" in media or media.startswith("/"):
        return media
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, media))}"
    return posixpath.normpath(posixpath.join(base, media))


def _manifest_rows(source: SourceConfig):
    """Yield (row number, row or None, error) for each line of a JSONL annotation file."""
    raw = storage.read_bytes(source.uri).removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
    base = source.uri.rsplit("/", 1)[0]
    # split on newlines only: U+2028 and friends are legal inside JSON strings
    for number, line_bytes in enumerate(raw.split(b"\n")):
        try:
            line = line_bytes.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            yield number, None, f"not UTF-8: {e.reason} at byte {e.start}"
            continue
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield number, None, f"not JSON: {e.msg} at column {e.colno}"
            continue
        except (ValueError, RecursionError) as e:  # a 5000-digit number, nesting a thousand deep
            yield number, None, f"not usable JSON: {type(e).__name__}: {str(e)[:120]}"
            continue
        error = _row_error(row)
        if error:
            yield number, row if isinstance(row, dict) else None, error
        else:
            yield number, {**row, "key": row["media"], "media": _resolve(base, row["media"])}, None


def utf8_ok(value) -> bool:
    """False for strings Arrow cannot store, such as JSON's lone surrogate escapes ("\\ud800")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _storable(value) -> str | None:
    """What of a broken row's field can go into its reject row."""
    return value if isinstance(value, str) and utf8_ok(value) else None


def _row_error(row) -> str | None:
    if not isinstance(row, dict):
        return "not a JSON object"
    bad = [k for k in ("media", "modality", "text", "group") if isinstance(row.get(k), str) and not utf8_ok(row[k])]
    if bad:
        return f"{', '.join(bad)}: not valid Unicode (a lone surrogate escape)"
    missing = [k for k in ("media", "modality", "text") if k not in row]
    if missing:
        return f"missing keys: {', '.join(missing)}"
    if not isinstance(row["media"], str) or not row["media"].strip():
        return f"media must be a non-empty string, got {row['media']!r}"
    if "\x00" in row["media"]:
        return "media path contains a NUL byte"
    if row["modality"] not in MODALITIES:
        return f"modality {row['modality']!r} is not one of {', '.join(MODALITIES)}"
    if not isinstance(row["text"], str):
        return f"text must be a string, got {type(row['text']).__name__}"
    group = row.get("group")
    if group is not None and (isinstance(group, bool) or not isinstance(group, (str, int))):
        return f"group must be a string or an integer, got {group!r}"
    return None


def _folder_rows(source: SourceConfig):
    """Yield rows for media files that have a `<stem>.txt` caption beside them."""
    fs, root = storage.filesystem(source.uri)
    prefix = source.uri.split("://", 1)[0] + "://" if "://" in source.uri else ""
    paths = sorted(fs.find(root))
    captions = {p.rsplit(".", 1)[0]: p for p in paths if p.endswith(".txt")}
    for number, path in enumerate(p for p in paths if not p.endswith(".txt")):
        if not utf8_ok(path):
            yield number, None, f"file name is not UTF-8: {ascii(path)}"
            continue
        ext = path.rsplit(".", 1)[-1].lower()
        modality = next((m for m, exts in MEDIA_EXTENSIONS.items() if ext in exts), None)
        caption_path = captions.get(path.rsplit(".", 1)[0])
        if modality is None:
            yield number, {"media": prefix + path}, f"extension .{ext} is not a known media type"
        elif caption_path is None:
            yield number, {"media": prefix + path}, "no sidecar caption (.txt) beside it"
        else:
            try:
                text = fs.cat_file(caption_path).decode("utf-8-sig")
            except UnicodeDecodeError as e:
                yield number, {"media": prefix + path}, f"caption {caption_path} is not UTF-8: {e.reason}"
                continue
            key = path[len(root.rstrip("/")) + 1:]
            yield number, {"media": prefix + path, "key": key, "modality": modality, "text": text}, None


def plan_collect(sources: list[SourceConfig], partition: str, run_id: str, shards: ShardConfig, workers: int,
                 out_dir: str) -> dict:
    """Group annotation rows into items, cut them into shards and write those; broken rows become rejects.

    Every row that names the same media file of a source joins one item, as one more text. Returns
    {"shards": [...], "rejects_uri", "n_rows", "n_rows_kept", "n_rejected", "n_items", "reasons"}.
    """
    marker = storage.join(out_dir, "_plan.json")
    if storage.exists(marker):
        return storage.read_json(marker)
    items: dict[tuple[str, str], dict] = {}
    labels: dict[tuple[str, str], list[str]] = {}  # an item's group labels: its own, and any the rows name
    bad, n_rows = [], 0
    for source in sources:
        reader = _manifest_rows if source.kind == "manifest" else _folder_rows
        for number, row, error in reader(source):
            n_rows += 1
            ident = (source.name, (row or {}).get("key"))
            item = items.get(ident) if not error else None
            if item is not None and item["modality"] != row["modality"]:
                error = (f"{row['key']} is named as {item['modality']} on row {item['source_rows'][0]} and as"
                         f" {row['modality']} here")
            if error:
                bad.append(_bad_row(source.name, number, row, error, partition, run_id))
                continue
            if item is None:
                # ids come from the annotation as written, not from where the corpus sits today or from
                # line numbers: moving a corpus or inserting a line keeps every id and every split
                item = items[ident] = {
                    "sample_id": make_sample_id(source.name, row["key"]), "source": source.name,
                    "modality": row["modality"], "texts": [], "source_uri": row["media"], "source_rows": [],
                    "partition": partition, "run_id": run_id,
                }
                labels[ident] = [f"{source.name}:{row['key']}"]
            item["texts"].append({"text": row["text"], "kind": "caption", "source": source.name})
            item["source_rows"].append(number)
            if row.get("group") is not None:
                labels[ident].append(f"{source.name}:{row['group']}")

    rows = list(items.values())
    for row, group_id in zip(rows, _group_names(list(labels.values()))):
        row["group_id"] = group_id
    listed = storage.sizes([row["source_uri"] for row in rows])
    for row in rows:
        row["media_size"] = listed[row["source_uri"]]

    uris = []
    for i, (start, end) in enumerate(cut_shards([row["media_size"] or 0 for row in rows], shards, workers)):
        uri = storage.join(out_dir, f"shard-{i:05d}.parquet")
        storage.write_parquet(uri, samples_from_rows(rows[start:end]))
        uris.append(uri)
    rejects_uri = storage.join(out_dir, "_plan.rejects.parquet")
    storage.write_parquet(rejects_uri, pa.Table.from_pylist(bad, schema=REJECT_SCHEMA))
    plan = {"shards": uris, "rejects_uri": rejects_uri, "n_rows": n_rows, "n_rows_kept": n_rows - len(bad),
            "n_rejected": len(bad), "n_items": len(rows), "reasons": {"collect:bad_row": len(bad)} if bad else {}}
    storage.write_json(marker, plan)  # the commit point, last
    return plan


def _bad_row(source: str, number: int, row: dict | None, error: str, partition: str, run_id: str) -> dict:
    media, text = (row or {}).get("media"), (row or {}).get("text")
    texts = [{"text": text, "kind": "caption", "source": source}] if _storable(text) is not None else None
    return {"sample_id": make_sample_id(source, f"bad-row:{number}"), "source": source, "texts": texts,
            "source_uri": _storable(media), "source_rows": [number], "stage": "collect", "reason": "collect:bad_row",
            "detail": error, "partition": partition, "run_id": run_id}


def _group_names(labels: list[list[str]]) -> list[str]:
    """Each item's group. Labels are [the item's own, then any group its rows name]; items sharing a
    label are one group, named after the smallest group a row named, else the smallest item label."""
    groups = UnionFind()
    for own, *named in labels:
        for label in named:
            groups.union(own, label)
    named_min: dict[str, str] = {}
    own_min: dict[str, str] = {}
    for own, *named in labels:
        root = groups.find(own)
        own_min[root] = min(own_min.get(root, own), own)
        if named:
            named_min[root] = min(named_min.get(root, min(named)), min(named))
    roots = [groups.find(own) for own, *_ in labels]
    return [named_min.get(root) or own_min[root] for root in roots]


def cut_shards(sizes: list[int], config: ShardConfig, workers: int) -> list[tuple[int, int]]:
    """(start, end) ranges over items in order: bounded by items and bytes, and at least one per
    worker (a whole number of waves of `workers` shards) while there are items to go round."""
    n, total = len(sizes), sum(sizes)
    if n == 0:
        return [(0, 0)]
    count = max(math.ceil(n / config.max_items), math.ceil(total / config.max_bytes), 1)
    count = min(n, math.ceil(count / workers) * workers)
    return bounded_ranges(sizes, math.ceil(n / count), config.max_bytes)


class CollectStage(RowStage):
    """Read each item's media from its source URI (local or object storage) into the row."""

    name = "collect"

    def check(self, row: dict):
        uri = row["source_uri"]
        try:
            data = storage.read_bytes(uri)
        except FileNotFoundError:
            return Reject("missing_media", uri)
        except Exception as e:  # no such protocol, bad path, permission, network: the item goes, the build stays
            return Reject("unreadable_media", f"{uri}: {type(e).__name__}: {e}")
        if not data:
            return Reject("empty_file", uri)
        ext = uri.rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else None
        return {**row, "media_bytes": data, "media_ext": ext, "media_size": len(data)}
