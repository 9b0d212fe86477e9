"""Collect: turn an annotation file (or a folder of media + sidecar captions) into work shards.

Two phases. `plan_collect` reads the annotation file once, validates every row and writes shards
of Sample rows that reference their media (no bytes yet); broken rows become `collect:bad_row`
rejects. Then `CollectStage` runs per shard and reads each referenced file into the row.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter

import pyarrow as pa

from . import storage
from .recipe import SourceConfig
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


def plan_collect(source: SourceConfig, partition: str, run_id: str, shard_rows: int, out_dir: str) -> dict:
    """Write plan shards and the bad-row rejects; return {"shards": [...], "n_in", "n_kept", "n_rejected"}."""
    marker = storage.join(out_dir, "_plan.json")
    if storage.exists(marker):
        return storage.read_json(marker)
    rows, bad = [], []
    occurrences: Counter[tuple[str, str]] = Counter()
    reader = _manifest_rows if source.kind == "manifest" else _folder_rows
    for number, row, error in reader(source):
        if error:
            media, text = (row or {}).get("media"), (row or {}).get("text")
            bad.append({"sample_id": make_sample_id(source.name, f"bad-row:{number}", None), "source": source.name,
                        "text": _storable(text), "source_uri": _storable(media), "source_row": number,
                        "stage": "collect", "reason": "collect:bad_row", "detail": error,
                        "partition": partition, "run_id": run_id})
            continue
        # ids and groups come from the annotation as written, not from where the corpus sits today or
        # from line numbers: moving a corpus or inserting a line keeps every other id and every split
        key, text, media = row["key"], row["text"], row["media"]
        occurrence = occurrences[(key, text)]
        occurrences[(key, text)] += 1
        sample_id = make_sample_id(source.name, f"{key}#{occurrence}", text)
        rows.append({
            "sample_id": sample_id, "source": source.name, "modality": row["modality"],
            # captions of one item share a group; so do rows that name the same group
            "group_id": f"{source.name}:{key if row.get('group') is None else row['group']}",
            "text": text,
            "source_uri": media, "source_row": number, "partition": partition, "run_id": run_id,
        })

    shards = []
    for i in range(0, max(len(rows), 1), shard_rows):
        uri = storage.join(out_dir, f"shard-{i // shard_rows:05d}.parquet")
        storage.write_parquet(uri, samples_from_rows(rows[i:i + shard_rows]))
        shards.append(uri)
    rejects_uri = storage.join(out_dir, "_plan.rejects.parquet")
    storage.write_parquet(rejects_uri, pa.Table.from_pylist(bad, schema=REJECT_SCHEMA))
    reasons = {"collect:bad_row": len(bad)} if bad else {}
    plan = {"shards": shards, "rejects_uri": rejects_uri, "n_in": len(rows) + len(bad),
            "n_kept": len(rows), "n_rejected": len(bad), "reasons": reasons}
    storage.write_json(marker, plan)  # the commit point, last
    return plan


class CollectStage(RowStage):
    """Read each row's media from its source URI (local or object storage) into the row."""

    name = "collect"

    def check(self, row: dict):
        uri = row["source_uri"]
        try:
            data = storage.read_bytes(uri)
        except FileNotFoundError:
            return Reject("missing_media", uri)
        except Exception as e:  # no such protocol, bad path, permission, network: the row goes, the build stays
            return Reject("unreadable_media", f"{uri}: {type(e).__name__}: {e}")
        if not data:
            return Reject("empty_file", uri)
        ext = uri.rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else None
        return {**row, "media_bytes": data, "media_ext": ext}
