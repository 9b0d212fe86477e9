"""OBELICS and MINT-1T (HTML) Parquet: one row per web document, `texts` and `images` lists aligned
position by position (at each position one holds a value and the other None), `general_metadata` a
JSON object with the page's url. One document item per row (see documents.py); its key is the page url,
or the row's position where there is none. `uri` is one Parquet file or a folder of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Literal

import pyarrow.parquet as pq

from ..core import storage
from .base import Row, Source, SourceError
from .documents import document_rows


class Obelics(Source):
    kind: Literal["obelics"]
    yields_documents = True

    def rows(self) -> Iterator[Row]:
        fs, path = storage.filesystem(self.uri)
        files = sorted(p for p in fs.find(path) if p.endswith(".parquet")) if fs.isdir(path) else [path]
        if not files or not fs.exists(files[0]):
            raise SourceError(f"source {self.name}: no Parquet files at {self.uri}")
        number = 0
        for file in files:
            try:
                table = pq.read_table(file, filesystem=fs)
            except Exception as e:
                raise SourceError(f"source {self.name}: {file} is not Parquet: {e}") from None
            if not {"texts", "images"} <= set(table.column_names):
                raise SourceError(f"source {self.name}: {file} has no 'texts' and 'images' columns (OBELICS)")
            for record in table.to_pylist():
                yield from self._document(number, record)
                number += 1

    def _document(self, number: int, record: dict) -> Iterator[Row]:
        texts, images = record.get("texts"), record.get("images")
        if not isinstance(texts, list) or not isinstance(images, list) or len(texts) != len(images):
            yield Row(number, error="texts and images are not lists of one length")
            return
        parts = []
        for position, (text, image) in enumerate(zip(texts, images)):
            if (text is None) == (image is None):
                held = "both" if text is not None else "neither"
                yield Row(number, error=f"position {position} holds {held} a text and an image")
                return
            parts.append(("text", text) if text is not None else ("image", image))
        meta = _json_object(record.get("general_metadata"))
        key = meta.get("url") or f"row-{number}"
        yield from document_rows(self, number, key, parts, meta or None)


def _json_object(value) -> dict:
    if isinstance(value, dict):
        return value
    try:
        out = json.loads(value) if isinstance(value, str) else {}
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}
