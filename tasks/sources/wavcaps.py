"""WavCaps (one JSON per subset: {"data": [...]}): each record is an audio file with its caption. The
subsets name their fields differently (FreeSound: id, file_name, href, tags, author; BBC Sound
Effects: id, category; SoundBible: title, author; AudioSet_SL: an id that ends in .wav), so the
file is `<id, without its extension>.<extension>` under `media_root` as the released archives hold
them, and every other field of a record goes to the item's meta."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import Row, Source, SourceError, caption

_NOT_META = {"id", "caption", "audio", "download_link"}


class WavCaps(Source):
    kind: Literal["wavcaps"]
    extension: str = "flac"

    def rows(self) -> Iterator[Row]:
        data = self.read_json()
        records = data.get("data") if isinstance(data, dict) else None
        if not isinstance(records, list):
            raise SourceError(f"source {self.name}: {self.uri} has no 'data' list (a WavCaps subset JSON)")
        for number, record in enumerate(records):
            ident = record.get("id") if isinstance(record, dict) else None
            if not isinstance(ident, str | int) or str(ident).strip() == "":
                yield Row(number, texts=caption(record.get("caption")) if isinstance(record, dict) else [],
                          error="record without an 'id'")  # fmt: skip
                continue
            stem = str(ident).removesuffix(".wav").removesuffix(".flac")
            path = f"{stem}.{self.extension}"
            meta = {k: v for k, v in record.items() if k not in _NOT_META and v not in (None, "", [])}
            yield Row(number, key=path, media=self.media_uri(path), modality="audio",
                      texts=caption(record.get("caption")), meta=meta or None)  # fmt: skip
