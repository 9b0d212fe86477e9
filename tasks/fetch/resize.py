"""Downloaded images resized as they arrive, by img2dataset's resizer (OpenCV + albumentations, the
same pixels an img2dataset run would store).

Two things differ from img2dataset alone. It silences OpenCV by pointing file descriptors 1 and 2 at
/dev/null around each image and back after; we resize on the download threads, where those swaps
interleave and leave the worker's stdout and stderr on /dev/null for good (its logs and errors lost).
That silencer is replaced by a no-op here: OpenCV's rare warnings about a corrupt JPEG reach the log.

And EXIF orientation. img2dataset decodes with OpenCV's IMREAD_UNCHANGED,
which ignores the orientation tag, so a phone photo taken upright would be stored on its side with the
tag gone. Images that carry a non-trivial orientation are turned upright with Pillow first.
"""

from __future__ import annotations

import contextlib
import io
import os

from PIL import Image, ImageOps

from . import FetchError

ORIENTATION = 0x0112


class ImageResizer:
    def __init__(
        self, image_size: int, resize_mode: str, resize_only_if_bigger: bool, encode_format: str, encode_quality: int
    ):
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # its import would look for updates online
        from img2dataset import resizer  # imported here: OpenCV and albumentations take a second

        resizer.SuppressStdoutStderr = contextlib.nullcontext  # not thread-safe: see above
        self.resizer = resizer.Resizer(
            image_size=image_size,
            resize_mode=resize_mode,
            resize_only_if_bigger=resize_only_if_bigger,
            encode_format=encode_format,
            encode_quality=encode_quality,
        )
        self.ext = encode_format

    def __call__(self, data: bytes) -> tuple[bytes, str]:
        resized, _, _, _, _, error = self.resizer(io.BytesIO(upright(data)))
        if error:
            raise FetchError("decode", f"the image could not be resized: {error}")
        return resized, self.ext


def upright(data: bytes) -> bytes:
    """The image with its EXIF orientation applied (losslessly re-encoded), or the same bytes if it has none."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.getexif().get(ORIENTATION, 1) in (0, 1):
                return data
            turned = ImageOps.exif_transpose(image)
    except Exception:  # not an image Pillow reads: the resizer decides
        return data
    out = io.BytesIO()
    turned.save(out, format="PNG", compress_level=1)
    return out.getvalue()
