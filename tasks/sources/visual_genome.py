"""Visual Genome (`image_data.json`: [{"image_id", "url", "width", "height", "coco_id", "flickr_id"}], and
`region_descriptions.json` beside it: [{"id": image_id, "regions": [{"region_id", "phrase", "x", "y",
"width", "height"}]}]): an image with its region phrases (texts of kind region). `uri` may name either file:
the other is found beside it (as COCO's source is given its captions file). Images at the path their `url`
ends in (`VG_100K/1.jpg`, `VG_100K_2/...`) under `media_root`, else downloaded from it.
With `region_crops`, each region is also an item of its own: the box cut from the image, its phrase
as its caption, grouped with the image (never split apart from it)."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import Literal

from pydantic import model_validator

from ..core import storage
from .base import Row, Source, SourceError, caption


class VisualGenome(Source):
    kind: Literal["visual_genome"]
    regions: str | None = None  # region_descriptions.json; default: beside `uri`
    region_crops: bool = False
    min_region_side: int = 32  # a smaller box on either side is not cut (a bad row that says so)

    @model_validator(mode="after")
    def _crops_from_local_images(self):
        if self.region_crops and not self.media_root:
            raise ValueError("region_crops cuts regions from local images: give media_root (each crop reads its image)")
        return self

    def _files(self) -> tuple[list, list]:
        """(image_data, region_descriptions), whichever of the two `uri` names."""
        given = self.read_json()
        if not isinstance(given, list):
            raise SourceError(f"source {self.name}: {self.uri} is not a list (Visual Genome image_data.json)")
        folder = posixpath.dirname(self.uri)
        if any(isinstance(x, dict) and "regions" in x for x in given[:100]):  # the descriptions were given
            images_uri = posixpath.join(folder, "image_data.json")
            if not storage.exists(images_uri):
                raise SourceError(
                    f"source {self.name}: {self.uri} holds region descriptions; the images' file "
                    f"(image_data.json, each image's url) is not beside it at {images_uri}"
                )
            images, described, regions_uri = self.read_json(images_uri), given, self.uri
        else:
            regions_uri = self.regions or posixpath.join(folder, "region_descriptions.json")
            images, described = given, self.read_json(regions_uri)
        if not isinstance(images, list) or not isinstance(described, list):
            raise SourceError(f"source {self.name}: {regions_uri} is not a list (Visual Genome region descriptions)")
        return images, described

    def rows(self) -> Iterator[Row]:
        images, described = self._files()
        by_image = {r.get("id"): r.get("regions") for r in described if isinstance(r, dict)}
        number = 0
        for image in images:
            image_id = image.get("image_id") if isinstance(image, dict) else None
            url = image.get("url") if image_id is not None else None
            if not isinstance(url, str):
                yield Row(number, error="image without an image_id and url")
                number += 1
                continue
            path = "/".join(url.rsplit("/", 2)[-2:])
            media = self.media_uri(path) if self.media_root else url
            regions = [r for r in by_image.get(image_id) or [] if isinstance(r, dict)]
            meta = {k: image[k] for k in ("image_id", "coco_id", "flickr_id") if image.get(k) is not None}
            phrases = [t for r in regions for t in caption(r.get("phrase"), "region")]
            yield Row(number, key=path, media=media, modality="image", texts=phrases, group=path, meta=meta)
            number += 1
            for region in regions if self.region_crops else ():
                box = tuple(region.get(k) for k in ("x", "y", "width", "height"))
                phrase = caption(region.get("phrase"))
                if not all(isinstance(v, int) and v >= 0 for v in box):
                    yield Row(number, texts=phrase, error=f"region {region.get('region_id')}: bad box {box}")
                elif min(box[2:]) < self.min_region_side:
                    yield Row(number, texts=phrase, error=f"region {region.get('region_id')}: {box[2]}x{box[3]} is"
                              f" under min_region_side {self.min_region_side}")  # fmt: skip
                else:
                    yield Row(
                        number,
                        key=f"{path}#region={region.get('region_id')}",
                        media=media,
                        modality="image",
                        texts=phrase,
                        group=path,
                        region=box,
                        meta={**meta, "region_id": region.get("region_id")},
                    )
                number += 1
