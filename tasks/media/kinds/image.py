"""Pictures: decoded and normalized once, found again by their pHash, ranked on small thumbnails."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage

from ...core.schema import scores_dict
from ...similar import hamming_pairs
from ..image import ImageCleanConfig, ImagePreset, as_published, decode_image
from ..ocr import read_image
from .base import MediaKind, with_reading


class Image(MediaKind):
    name = "image"
    Settings = ImageCleanConfig
    aligned_by = "image_text"
    card_tasks = ("image-to-text", "text-to-image")
    member_facts = ("width", "height", "phash")
    member_lineage = ("region",)  # the box of the source picture this item is
    extensions = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})
    signatures = ("phash",)

    def __init__(self, settings) -> None:
        image = settings.image
        resize = image.resize
        self.preset = ImagePreset(
            short_side=resize.short_side if resize else None,
            center_crop=resize.center_crop if resize else None,
            format=image.format,
            quality=image.quality,
            animated=image.animated,
        )
        self.max_pixels = settings.max_image_pixels
        self.ocr = image.ocr

    def facts(self, row: dict) -> dict:
        facts = super().facts(row)  # decoded here, or measured by a download's resize: OCR reads either
        return facts if self.ocr == "off" else with_reading(facts, read_image(facts["media_bytes"], self.ocr), self.ocr)

    def clean(self, data: bytes) -> dict:
        image = decode_image(data, self.max_pixels, self.preset)
        return _image_facts(image.data, image.ext, image.width, image.height, image.phash, image.pixel_std)

    def measured(self, row):
        # collect fills an image's phash only from its own decode of the bytes it returns (upright RGB)
        width, height = row["width"], row["height"]
        if row["phash"] is None or width * height > self.max_pixels:
            return None
        if not as_published(width, height, row["media_ext"], self.preset):
            return None
        return _image_facts(
            row["media_bytes"], row["media_ext"], width, height, row["phash"], scores_dict(row)["pixel_std"]
        )

    @staticmethod
    def duplicate_pairs(items, config):
        if config.image_radius is None:
            return
        ids, hashes = items.hex64("image", "phash")
        for a, b, d in hamming_pairs(ids, hashes, config.image_radius):
            yield a, b, "duplicate:near", f"pHash {d} bits"

    @staticmethod
    def distance(a, b):
        if not (a["phash"] and b["phash"]):
            return MediaKind.distance(a, b)
        return (int(a["phash"], 16) ^ int(b["phash"], 16)).bit_count() / 64

    @classmethod
    def mean_distances(cls, members, fetch=None):
        """On small grey thumbnails of the members, compared pixel by pixel, where their media are at hand:
        a 64-bit pHash puts an original and its brightened, captioned, PNG or WebP copies 0-2 bits apart,
        a tie that cannot tell which is the original; the pixels can (an original is one edit away from
        each copy, two copies are two edits apart). On the pHashes otherwise."""
        if fetch is not None and len(members) <= MAX_THUMBNAIL_CLUSTER:
            media = fetch(m["sample_id"] for m in members)
            thumbs = [thumbnail(media.get(m["sample_id"])) for m in members]
            if all(t is not None for t in thumbs):
                stack = np.stack(thumbs)
                apart = np.abs(stack[:, None] - stack[None]).mean(axis=(2, 3))
                means = apart.sum(axis=1) / (len(members) - 1)
                # within a grey level of the most central is as central: a lossless copy of the original
                # (a PNG of it) ties with it, and the criteria after the medoid decide
                return np.where(means <= means.min() + 1 / 255, means.min(), means).tolist()
        if not all(m["phash"] for m in members):
            return super().mean_distances(members)
        # bit by bit rather than pair by pair (a cluster of 5,000 copies is 25M pairs): a member's summed
        # distance counts, where it has a 1, the members with a 0, and where it has a 0, those with a 1
        hashes = np.array([int(m["phash"], 16) for m in members], np.uint64)
        bits = np.unpackbits(hashes.view(np.uint8).reshape(-1, 8), axis=1).astype(np.int64)
        ones = bits.sum(axis=0)
        summed = np.where(bits == 1, len(members) - ones, ones).sum(axis=1)
        return (summed / 64 / (len(members) - 1)).tolist()


THUMBNAIL_SIDE = 32
MAX_THUMBNAIL_CLUSTER = 256  # members: a larger cluster is ranked on its pHashes (its pairs grow as the square)


def thumbnail(data: bytes | None) -> np.ndarray | None:
    """A picture as a THUMBNAIL_SIDE square of grey levels 0-1 (its aspect ignored: copies share it)."""
    if data is None:
        return None
    try:
        with PILImage.open(io.BytesIO(data)) as picture:
            picture.draft("L", (THUMBNAIL_SIDE * 2, THUMBNAIL_SIDE * 2))  # a JPEG decodes at 1/8 scale and up
            small = picture.convert("L").resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), PILImage.Resampling.BOX)
            return np.asarray(small, np.float32) / 255
    except (OSError, ValueError, PILImage.DecompressionBombError):
        return None


def _image_facts(data: bytes, ext: str, width: int, height: int, phash: str, pixel_std: float) -> dict:
    """The columns clean fills for an image, and the score the filters judge it by (`_scores`)."""
    return {
        "media_bytes": data,
        "media_ext": ext,
        "width": width,
        "height": height,
        "phash": phash,
        "_scores": {"pixel_std": pixel_std},
    }
