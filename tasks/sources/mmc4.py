"""MMC4 (JSON lines, one document a line: `url`, `text_list` of sentences, `image_info` of {"image_name",
"raw_url", "matched_text_index", "matched_sim"}): each image is placed before the sentence it is matched
to, as the dataset's training loaders read it (images matched to one sentence in their listed order).
Images `image_name` under `media_root` where they were downloaded, else fetched from `raw_url`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import Row, Source
from .documents import document_rows


class Mmc4(Source):
    kind: Literal["mmc4"]
    yields_documents = True

    def rows(self) -> Iterator[Row]:
        for number, record, error in self.read_records():
            sentences, images = (record or {}).get("text_list"), (record or {}).get("image_info")
            if error or not isinstance(sentences, list) or not isinstance(images, list):
                yield Row(number, error=error or "record without 'text_list' and 'image_info' lists")
                continue
            before: dict[int, list[str]] = {}
            for image in images:
                at = image.get("matched_text_index") if isinstance(image, dict) else None
                where = image.get("image_name" if self.media_root else "raw_url") if at is not None else None
                if not isinstance(at, int) or not 0 <= at < len(sentences) or not isinstance(where, str):
                    yield Row(number, error=f"image {image!r:.200} has no valid matched_text_index and location")
                    break
                before.setdefault(at, []).append(where)
            else:
                parts = []
                for i, sentence in enumerate(sentences):
                    parts += [("image", where) for where in before.get(i, [])]
                    parts.append(("text", sentence if isinstance(sentence, str) else ""))
                key = record.get("url") if isinstance(record.get("url"), str) else f"line-{number}"
                meta = {"url": record["url"]} if record.get("url") else None
                yield from document_rows(self, number, key, parts, meta)
