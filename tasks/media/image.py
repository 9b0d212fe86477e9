"""Images with Pillow: full decode (catches truncation), facts, perceptual hash, JPEG normalization."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import imagehash
from PIL import Image, UnidentifiedImageError

from . import MediaError

JPEG_MAX_SIDE = 65_500


@dataclass
class DecodedImage:
    data: bytes  # normalized bytes (the input itself when it already was an RGB JPEG)
    ext: str
    width: int
    height: int
    source_format: str
    phash: str


def decode_image(data: bytes, max_pixels: int = 64_000_000, jpeg_quality: int = 95) -> DecodedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            image = Image.open(io.BytesIO(data))
            source_format = image.format or "unknown"
            image.load()  # decode every pixel: lazy open() alone misses truncated files
    except UnidentifiedImageError:
        raise MediaError("not_an_image", "Pillow recognizes no image format in these bytes") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaError("too_many_pixels", str(e)) from None
    except OSError as e:
        code = "truncated" if "truncated" in str(e) else "corrupt"
        raise MediaError(code, str(e)) from None
    except (SyntaxError, ValueError) as e:  # Pillow raises these for some malformed headers
        raise MediaError("corrupt", str(e)) from None

    if source_format == "JPEG" and image.mode == "RGB":
        normalized = data
    elif max(image.size) > JPEG_MAX_SIDE:
        raise MediaError("too_large_side", f"{image.width}x{image.height}: JPEG stops at {JPEG_MAX_SIDE} px a side")
    else:
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=jpeg_quality)
        normalized = out.getvalue()
    return DecodedImage(
        data=normalized,
        ext="jpg",
        width=image.width,
        height=image.height,
        source_format=source_format,
        phash=str(imagehash.phash(image)),
    )
