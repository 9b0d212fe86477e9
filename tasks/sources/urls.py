"""URL lists (CC3M/CC12M TSV, LAION-style parquet, CSV, JSONL): one image to download per row.

Columns other than the URL and caption (LAION's WIDTH, similarity, LICENSE ...) are kept as the
item's metadata. CC3M's TSV has no header: name its columns with `columns: [caption, url]`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Literal

import pyarrow.parquet as pq

from ..core import storage
from .base import Row, Source, SourceError, caption

FORMATS = ("csv", "tsv", "parquet", "jsonl")


class Urls(Source):
    kind: Literal["urls"]
    url_col: str = "url"
    caption_col: str = "caption"
    columns: list[str] | None = None  # the column names of a file without a header row
    modality: Literal["image", "audio", "video"] = "image"
    format: Literal["csv", "tsv", "parquet", "jsonl"] | None = None  # default: from the file's extension

    def rows(self) -> Iterator[Row]:
        fmt = self.format or self.uri.rsplit(".", 1)[-1].lower()
        if fmt not in FORMATS:
            raise SourceError(
                f"source {self.name}: cannot tell the format of {self.uri}; set format: to one of {FORMATS}"
            )
        records = {
            "csv": lambda: self.read_csv(",", self.columns),
            "tsv": lambda: self.read_csv("\t", self.columns),
            "parquet": self._parquet,
            "jsonl": self._jsonl,
        }[fmt]()
        named = (self.url_col, self.caption_col)  # read once: a model's fields cost a lookup each time
        for number, record in records:
            if record is None or not isinstance(record, dict):
                yield Row(number, error="not a JSON object")
                continue
            url = record.get(self.url_col)
            if not isinstance(url, str) or not url.strip():
                yield Row(
                    number,
                    texts=caption(record.get(self.caption_col)),
                    error=f"no URL in column {self.url_col!r} (columns: {', '.join(map(str, record))})",
                )
                continue
            url = url.strip()
            if not url.startswith(("http://", "https://")):
                yield Row(
                    number,
                    media=url,
                    texts=caption(record.get(self.caption_col)),
                    error=f"not an http(s) URL: {url[:200]}",
                )
                continue
            meta = {k: v for k, v in record.items() if k not in named and v not in (None, "")}
            yield Row(
                number,
                key=url,
                media=url,
                modality=self.modality,
                texts=caption(record.get(self.caption_col)),
                meta=json.loads(json.dumps(meta, default=str)) if meta else None,  # dates and the like as text
            )

    def _parquet(self):
        """Record by record, a batch in memory at a time (a LAION part is millions of rows)."""
        fs, path = storage.filesystem(self.uri)
        try:
            with fs.open(path, "rb") as f:
                number = 0
                for batch in pq.ParquetFile(f).iter_batches(batch_size=65_536):
                    for record in batch.to_pylist():
                        yield number, record
                        number += 1
        except FileNotFoundError:
            raise SourceError(f"source {self.name}: {self.uri} does not exist") from None

    def _jsonl(self):
        for number, line in enumerate(self.read_bytes().split(b"\n")):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except ValueError:
                    yield number, None
