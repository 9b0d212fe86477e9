"""Clotho (`clotho_captions_<split>.csv`: file_name, caption_1 ... caption_5): one audio item per file."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import Row, Source, caption


class Clotho(Source):
    kind: Literal["clotho"]

    def rows(self) -> Iterator[Row]:
        for number, row in self.read_csv():
            error = self.require_columns(row, "file_name")
            texts = [
                t
                for k in sorted(c for c in row if isinstance(c, str) and c.startswith("caption_"))
                for t in caption(row[k])
            ]
            yield Row(
                number,
                key=row.get("file_name"),
                media=None if error else self.media_uri(row["file_name"]),
                modality="audio",
                texts=texts,
                error=error,
            )
