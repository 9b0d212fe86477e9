"""Flickr30k captions: Kaggle's `results.csv` ("image_name| comment_number| comment") or Karpathy's
`dataset_flickr30k.json` (also `dataset_coco.json`), chosen by the file's extension."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import Row, Source, SourceError, caption


class Flickr30k(Source):
    kind: Literal["flickr30k"]

    def rows(self) -> Iterator[Row]:
        yield from self._karpathy() if self.uri.endswith(".json") else self._results_csv()

    def _results_csv(self) -> Iterator[Row]:
        for number, row in self.read_csv(delimiter="|"):
            error = self.require_columns(row, "image_name")
            yield Row(
                number,
                key=row.get("image_name"),
                media=self.media_uri(row["image_name"]) if not error else None,
                modality="image",
                texts=caption(row.get("comment")),
                error=error,
            )

    def _karpathy(self) -> Iterator[Row]:
        data = self.read_json()
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise SourceError(f"source {self.name}: {self.uri} has no 'images' list (Karpathy split JSON)")
        for number, image in enumerate(data["images"]):
            if not isinstance(image, dict) or not isinstance(image.get("filename"), str):
                yield Row(number, error="image record without a 'filename'")
                continue
            path = f"{image['filepath']}/{image['filename']}" if image.get("filepath") else image["filename"]
            texts = [t for s in image.get("sentences") or [] if isinstance(s, dict) for t in caption(s.get("raw"))]
            yield Row(
                number,
                key=path,
                media=self.media_uri(path),
                modality="image",
                texts=texts,
                meta={"karpathy_split": image.get("split")} if image.get("split") else None,
            )
