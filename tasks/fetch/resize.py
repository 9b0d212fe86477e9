"""Downloaded images resized as they arrive, with img2dataset's options and in the decode clean measures.

img2dataset's resizer (OpenCV + albumentations) decodes, resizes and encodes; clean then decoded its
output again to measure the picture. Here one Pillow decode does both: `decode_image` with img2dataset's
geometry (`keep_ratio` scales the shorter side to `image_size`, `keep_ratio_largest` the longer one,
`center_crop` then keeps the centered square, `border` pads the fitted picture to a white square) and
its filters (area averaging down, Lanczos up). The facts it measured travel with the bytes (and into
the download log), so clean keeps them instead of decoding again when the recipe's own encoding
leaves the bytes alone (tasks/media/kinds/).

What differs from img2dataset: a JPEG is decoded at 1/2, 1/4 or 1/8 of its size where that still
covers the target (DCT scaling, what Pillow's `thumbnail` does), so the pixels are not bit-identical
to OpenCV's; a photo's EXIF orientation is applied (img2dataset's IMREAD_UNCHANGED drops it, and a
phone photo would be stored on its side); an RGB JPEG that needs no resize is kept as it came, not
encoded a second time.
"""

from __future__ import annotations

from ..media import MediaError
from ..media.image import ImagePreset, decode_image
from . import FetchError

MODES = {  # img2dataset's resize_mode: the preset's sizes that image_size sets (which side, then crop or pad)
    "keep_ratio": ("short_side",),
    "center_crop": ("short_side", "center_crop"),
    "keep_ratio_largest": ("long_side",),
    "border": ("long_side", "pad"),
}


def download_preset(
    image_size: int, resize_mode: str, resize_only_if_bigger: bool, encode_format: str, encode_quality: int
) -> ImagePreset:
    """The recipe's `network.resize` (img2dataset's options) as the preset clean's decoder takes."""
    size = {part: image_size for part in MODES[resize_mode]}
    quality = {"compress_level" if encode_format == "png" else "quality": encode_quality}
    return ImagePreset(
        **size, upscale=not resize_only_if_bigger, resample="area", format=encode_format, animated="reject", **quality
    )


class ImageResizer:
    def __init__(self, **resize):
        self.preset = download_preset(**resize)

    def __call__(self, data: bytes) -> dict | None:
        """The resized `media_bytes` and `media_ext`, and the facts `measured` of them (the columns clean fills).
        None for an animated image: it is kept as served, for `clean.image.animated` to decide (its first
        frame, or a reject)."""
        try:
            image = decode_image(data, preset=self.preset)
        except MediaError as e:
            if e.code == "animated":
                return None
            raise FetchError("decode", f"the image could not be resized: {e.code}: {e.detail}") from None
        measured = {"width": image.width, "height": image.height, "phash": image.phash, "pixel_std": image.pixel_std}
        return {"media_bytes": image.data, "media_ext": image.ext, "measured": measured}
