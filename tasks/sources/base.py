"""What every source adapter shares: its recipe keys, the Row it yields, and readers for its files.

An adapter is one small pydantic class: its fields are the recipe keys of its kind (validated with
errors naming the key), and `rows()` parses the dataset's own annotation format into Rows. A Row is
one annotation record: the media it names and the texts it adds to that media's item. Rows that
name the same media (the same `key`) become one item in the plan. A record that cannot be used is a
Row with an `error`; it becomes a `collect:bad_row` reject, and the source goes on.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from ..core import storage
from ..core.partitions import PARTITION_FIELD, fill_partition
from ..core.settings import Strict

YOUTUBE = "https://www.youtube.com/watch?v={}"


class SourceError(ValueError):
    """The source as a whole cannot be read (no annotation file, not the format its kind says)."""


@dataclass
class Row:
    number: int  # position of the record in the annotation file (its line, or its index in a list)
    key: str | None = None  # the media as the annotation names it (plus a time window): the item's identity
    media: str | None = None  # where to read or download it: a path, s3:// or http(s):// URL
    modality: str | None = None
    texts: list[dict] = field(default_factory=list)  # [{"text", "kind"}]
    group: str | None = None  # rows naming one group stay in one split
    clip: tuple[float, float] | None = None  # the window of the media this item is, in seconds
    meta: dict | None = None  # what the source says about the media beyond its texts
    error: str | None = None  # why the record cannot be used
    region: tuple[int, int, int, int] | None = None  # the box (x, y, width, height) of the image this item is
    part_of: str | None = None  # an image of a document: the document's key (it needs no text of its own)
    # a document: its parts in order, each ("text", the index of one of `texts`) or ("image", an image row's key)
    segments: list[tuple[str, int | str]] | None = None


def caption(text, kind: str = "caption") -> list[dict]:
    """The texts of a record from one value; a missing or non-string value gives none (a text:empty)."""
    return [{"text": text, "kind": kind}] if isinstance(text, str) else []


def clip_key(key: str, start: float | None, end: float | None) -> str:
    return key if start is None else f"{key}@{start:g}-{'' if end is None else f'{end:g}'}"


def windows(
    number: int, video: str, spans, texts: list[list[dict]], media: str, key: str, meta: dict | None = None
) -> Iterator[Row]:
    """One clip Row per annotated window of a video (all grouped by the video); a window that is not
    [start < end] is a bad row that still carries its texts."""
    for n, ((start, end), said) in enumerate(zip(spans, texts)):
        start, end = seconds(start), seconds(end)
        if start is None or end is None or end <= start:
            yield Row(number + n, texts=said, error=f"{video}: bad window {start!r}-{end!r}")
        else:
            yield Row(
                number + n,
                key=clip_key(key, start, end),
                media=media,
                modality="video",
                texts=said,
                group=video,
                clip=(start, end),
                meta=meta,
            )


def sources_for_partition(sources, partition: str) -> tuple[list[Source], list[Source]]:
    """(present, absent): every source resolved for the partition; a source read per partition whose
    drop for this one does not exist is absent (nothing to build from it), any other is present."""
    present, absent = [], []
    for source in sources:
        resolved = source.resolved(partition)
        missing = source.per_partition and not storage.exists(resolved.uri)
        (absent if missing else present).append(resolved)
    return present, absent


class Source(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    kind: str
    # the annotation file, URL list or folder; local path or s3://. `{partition}` (or, for date
    # partitions, `{partition:%Y/%m/%d}`) in it makes each partition read its own drop
    uri: str
    media_root: str | None = None  # where relative media paths resolve; default: the folder of `uri`
    # the license the source is published under (an SPDX-style id such as cc-by-4.0), as the data card states it
    license: str | None = None
    # the recipe's `filter:` thresholds this source's items are judged by instead (`{min_speech_ratio: 0.5}`
    # for speech, `{max_speech_ratio: 0.2}` for sound events in one recipe): filter's own keys, checked
    # against them when the recipe is read
    filter: dict[str, Any] = {}
    yields_documents: ClassVar[bool] = False  # its items include documents (interleaved text and pictures)

    @abstractmethod
    def rows(self) -> Iterator[Row]:
        """The annotation's records, in file order (pydantic models are ABCs: an adapter must define it)."""

    def resolved(self, partition: str | None = None) -> Source:
        """The source of one partition: `{partition}` and strftime date parts (%Y, %m, %d, ...) in `uri`
        and `media_root` filled in, and relative local paths made absolute where the command runs (a
        Ray worker's folder is not the user's)."""
        update = {}
        for key in ("uri", "media_root"):
            value = getattr(self, key)
            if value and partition is not None:
                value = fill_partition(value, partition)
            if value and "://" not in value and not Path(value).is_absolute():
                value = str(Path(value).absolute())
            update[key] = value
        return self.model_copy(update=update)

    @property
    def generated(self) -> bool:
        """Whether the build makes this source's files itself where they are missing (the demo corpus)."""
        return False

    @property
    def per_partition(self) -> bool:
        """Whether each partition reads its own drop (the uri names the partition)."""
        return bool(PARTITION_FIELD.search(self.uri))

    # -- helpers for adapters --------------------------------------------------------------------

    def where_media_were_sought(self, looked_for: list[str], missing: int, of: int) -> str:
        """One line for a source whose media are mostly missing: where the first few were looked for, and what
        the folder they were looked for in holds instead."""
        root = self.media_root or self.uri.rsplit("/", 1)[0]
        try:
            fs, path = storage.filesystem(root)
            entries = sorted(fs.ls(path, detail=False))[:8] if fs.exists(path) else []
        except (OSError, ValueError):
            entries = []
        held = ", ".join(e.rstrip("/").rsplit("/", 1)[-1] for e in entries) or "nothing"
        return (
            f"source {self.name}: {missing} of {of} media are missing (collect:missing_media); looked for "
            f"{', '.join(looked_for[:3])}; {root} holds: {held}"
        )

    def media_uri(self, path: str) -> str:
        """A media path from the annotation, resolved against `media_root` (absolute paths and URLs kept)."""
        if "://" in path or path.startswith("/"):
            return path
        base = (self.media_root or self.uri.rsplit("/", 1)[0]).rstrip("/")
        if "://" in base:
            scheme, rest = base.split("://", 1)
            return f"{scheme}://{posixpath.normpath(posixpath.join(rest, path))}"
        return posixpath.normpath(posixpath.join(base, path))

    def read_bytes(self, uri: str | None = None) -> bytes:
        uri = uri or self.uri
        try:
            return storage.read_bytes(uri).removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
        except FileNotFoundError:
            raise SourceError(f"source {self.name}: {uri} does not exist") from None

    def read_json(self, uri: str | None = None):
        try:
            return json.loads(self.read_bytes(uri))
        except (UnicodeDecodeError, ValueError) as e:
            raise SourceError(f"source {self.name} ({self.kind}): {uri or self.uri} is not JSON: {e}") from None

    def find_files(self, suffix: str, what: str) -> tuple[object, str, list[str]]:
        """(filesystem, root, sorted paths under `uri` ending in `suffix`); none is a SourceError naming `what`."""
        fs, root = storage.filesystem(self.uri)
        root = root.rstrip("/")
        paths = sorted(p for p in fs.find(root) if p.endswith(suffix))
        if not paths:
            raise SourceError(f"source {self.name}: no {what} files under {self.uri}")
        return fs, root, paths

    def read_records(self) -> Iterator[tuple[int, dict | None, str | None]]:
        """(number, record, error) of a JSON list file, or of a JSON-lines file (one object a line):
        a line that is not a JSON object is an error, and the file goes on."""
        data = self.read_bytes()
        if data.lstrip()[:1] == b"[":
            for number, record in enumerate(self.read_json()):
                yield number, record, None if isinstance(record, dict) else "record is not an object"
            return
        for number, line in enumerate(data.splitlines()):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, ValueError) as e:
                yield number, None, f"line {number + 1} is not JSON: {e}"
                continue
            yield number, record, None if isinstance(record, dict) else "record is not an object"

    def read_csv(self, delimiter: str = ",", fieldnames: list[str] | None = None) -> Iterator[tuple[int, dict]]:
        """(line number, row) for each data row; a header row names the columns unless `fieldnames` do."""
        try:
            text = self.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise SourceError(f"source {self.name}: {self.uri} is not UTF-8: {e.reason} at byte {e.start}") from None
        reader = csv.DictReader(
            io.StringIO(text, newline=""), fieldnames=fieldnames, delimiter=delimiter, skipinitialspace=True
        )
        for row in reader:
            yield reader.line_num - 1, {k.strip() if isinstance(k, str) else k: v for k, v in row.items()}

    def require_columns(self, row: dict, *columns: str) -> str | None:
        missing = [c for c in columns if row.get(c) in (None, "")]
        return f"missing {', '.join(missing)}" if missing else None


def seconds(value) -> float | None:
    """A time from an annotation field, or None when it is not a finite non-negative number."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out >= 0 and out != float("inf") else None
