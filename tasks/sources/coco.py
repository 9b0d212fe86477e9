"""COCO captions (`annotations/captions_*.json`): five captions per image, one item per image."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import Row, Source, SourceError, caption


class Coco(Source):
    kind: Literal["coco"]

    def rows(self) -> Iterator[Row]:
        data = self.read_json()
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("images"), list)
            or not isinstance(data.get("annotations"), list)
        ):
            raise SourceError(f"source {self.name}: {self.uri} has no 'images' and 'annotations' lists (COCO captions)")
        licenses = {lic.get("id"): lic for lic in data.get("licenses") or [] if isinstance(lic, dict)}
        images = {}
        for image in data["images"]:
            if isinstance(image, dict) and isinstance(image.get("file_name"), str) and "id" in image:
                images[image["id"]] = image
        captioned = set()
        for number, ann in enumerate(data["annotations"]):
            image = images.get(ann.get("image_id")) if isinstance(ann, dict) else None
            if image is None:
                yield Row(
                    number,
                    texts=caption(ann.get("caption")) if isinstance(ann, dict) else [],
                    error=f"orphan annotation: image_id {ann.get('image_id') if isinstance(ann, dict) else ann!r}"
                    " is not in 'images'",
                )
                continue
            captioned.add(image["id"])
            yield self._row(number, image, caption(ann.get("caption")), licenses)
        # an image nobody captioned is still listed, so it is counted: an item with no text (text:empty)
        for number, image in enumerate(data["images"], start=len(data["annotations"])):
            if isinstance(image, dict) and image.get("id") in images and image["id"] not in captioned:
                yield self._row(number, image, [], licenses)

    def _row(self, number: int, image: dict, texts: list[dict], licenses: dict) -> Row:
        license = licenses.get(image.get("license"), {})
        meta = {"coco_id": image["id"], "license": license.get("name"), "license_url": license.get("url")}
        return Row(
            number,
            key=image["file_name"],
            media=self.media_uri(image["file_name"]),
            modality="image",
            texts=texts,
            meta={k: v for k, v in meta.items() if v is not None},
        )
