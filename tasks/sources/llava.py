"""LLaVA-CC3M-Pretrain-595K `chat.json`: the assistant's answer is the image's caption."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import Row, Source, SourceError, caption


class Llava(Source):
    kind: Literal["llava"]

    def rows(self) -> Iterator[Row]:
        data = self.read_json()
        if not isinstance(data, list):
            raise SourceError(f"source {self.name}: {self.uri} is not a list of conversations (LLaVA chat.json)")
        for number, record in enumerate(data):
            if not isinstance(record, dict) or not isinstance(record.get("image"), str):
                yield Row(number, error="record without an 'image'")
                continue
            turns = [t for t in record.get("conversations") or [] if isinstance(t, dict)]
            texts = [t for turn in turns if turn.get("from") == "gpt" for t in caption(turn.get("value"))]
            yield Row(
                number,
                key=record["image"],
                media=self.media_uri(record["image"]),
                modality="image",
                texts=texts,
                meta={"llava_id": record.get("id")} if record.get("id") else None,
            )
