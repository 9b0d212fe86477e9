"""mmetl's own JSONL annotation: one {"media", "modality", "text", "group"?} per line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Literal

from ..media.kinds import KINDS
from .base import Row, Source, caption


def utf8_ok(value) -> bool:
    """False for strings Arrow cannot store, such as JSON's lone surrogate escapes ("\\ud800")."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Manifest(Source):
    """Media paths are relative to `media_root` (default: the file's folder), or absolute/`s3://`/http(s) URIs;
    every line naming the same media adds a text to its item."""

    kind: Literal["manifest"]
    synthesize_demo: bool = False  # generate the bundled offline demo corpus at `uri` if it is missing

    @property
    def generated(self) -> bool:
        return self.synthesize_demo

    def rows(self) -> Iterator[Row]:
        # split on newlines only: U+2028 and friends are legal inside JSON strings
        for number, line_bytes in enumerate(self.read_bytes().split(b"\n")):
            try:
                line = line_bytes.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                yield Row(number, error=f"not UTF-8: {e.reason} at byte {e.start}")
                continue
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield Row(number, error=f"not JSON: {e.msg} at column {e.colno}")
                continue
            except (ValueError, RecursionError) as e:  # a 5000-digit number, nesting a thousand deep
                yield Row(number, error=f"not usable JSON: {type(e).__name__}: {str(e)[:120]}")
                continue
            error = record_error(record)
            if error:
                fields = record if isinstance(record, dict) else {}
                yield Row(number, media=fields.get("media"), texts=caption(fields.get("text")), error=error)
            else:
                yield Row(
                    number,
                    key=record["media"],
                    media=self.media_uri(record["media"]),
                    modality=record["modality"],
                    texts=caption(record["text"]),
                    group=record.get("group"),
                )


def record_error(row) -> str | None:
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
    files = [name for name, kind in KINDS.items() if kind.has_media]  # a manifest lists files
    if row["modality"] not in files:
        return f"modality {row['modality']!r} is not one of {', '.join(files)}"
    if not isinstance(row["text"], str):
        return f"text must be a string, got {type(row['text']).__name__}"
    group = row.get("group")
    if group is not None and (isinstance(group, bool) or not isinstance(group, (str, int))):
        return f"group must be a string or an integer, got {group!r}"
    return None
