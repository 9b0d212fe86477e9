"""Images with Pillow: decode once, upright, in RGB; facts, perceptual hash, a blankness score, and the
recipe's encoding (optionally resized and center-cropped, or fitted and padded to a square).

- Full decode (catches truncation), with JPEG draft mode (DCT scaling) when a resize lets it decode
  at a fraction of the size.
- EXIF orientation applied: width, height, pHash and the published pixels are upright.
- Every mode to RGB: CMYK, palette, grey, 16-bit (scaled, not clipped), alpha laid on white.
- Animated images: the first frame, or a reject (`decode:animated`), per recipe.
- The pHash is of the whole upright picture (as resized, before any crop), so copies cropped
  differently by a preset still meet in dedupe. `pixel_std` (the largest per-channel spread of a
  128-255 px copy: a red shape on a green field of equal brightness is not blank) scores blank images.
- An RGB JPEG that needs no change is published as it came (no second lossy encode).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Literal

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import Field

from ..core.settings import Strict
from . import MediaError
from .ocr import OcrMode


class ResizeConfig(Strict):
    short_side: int | None = Field(None, ge=8)  # scale so the shorter side is this (never up)
    center_crop: int | None = Field(None, ge=8)  # then keep the centered square of this side


class ImageCleanConfig(Strict):
    """How images are published: upright RGB, in this format, optionally resized (torchvision's
    Resize(256) + CenterCrop(224) is `resize: {short_side: 256, center_crop: 224}`)."""

    resize: ResizeConfig | None = None
    format: Literal["jpg", "png", "webp"] = "jpg"
    quality: int = Field(95, ge=50, le=100)
    animated: Literal["first_frame", "reject"] = "first_frame"  # GIF/WebP/APNG with several frames
    # text in the picture (PP-OCR, tasks/media/ocr.py): `detect` measures the `text_area` score (the share of the
    # picture inside text boxes, which filter.max_text_area judges), `read` also adds the lines read as a text
    # of kind `ocr`; off by default (bench/README.md: what each costs)
    ocr: OcrMode = "off"


JPEG_MAX_SIDE = 65_500
FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}


@dataclass(frozen=True)
class ImagePreset:
    """How an image is encoded: clean's recipe settings, or a download's resize (tasks/fetch/resize.py,
    img2dataset's modes). None leaves the size alone."""

    short_side: int | None = None  # scale so the shorter side is this
    long_side: int | None = None  # or so the longer side is this
    upscale: bool = False  # also scale up a smaller image
    center_crop: int | None = None  # then keep the centered square of this side
    pad: int | None = None  # or lay a fitted image (its longer side this long) on a white square of this side
    resample: str = "bilinear"  # antialiased bilinear (torchvision's Resize), or "area": img2dataset's filters
    format: str = "jpg"  # jpg | png | webp
    quality: int = 95  # jpg, webp
    compress_level: int = 6  # png, 0-9 (lossless: how hard it compresses)
    animated: str = "first_frame"  # first_frame | reject


@dataclass
class DecodedImage:
    data: bytes  # normalized bytes (the input itself when it already was an RGB JPEG that needs no change)
    ext: str
    width: int  # of the published pixels, upright
    height: int
    source_format: str
    phash: str
    oriented: bool  # an EXIF orientation was applied
    pixel_std: float  # largest per-channel standard deviation of a 128-255 px copy: ~0 for a blank image


def decode_image(data: bytes, max_pixels: int = 64_000_000, preset: ImagePreset = ImagePreset()) -> DecodedImage:
    image, source_format, file_size = _open(data, max_pixels, preset)
    oriented = _orientation(image) not in (None, 1)
    rgb = to_rgb(ImageOps.exif_transpose(image) if oriented else image)
    scaled = _scale(rgb, preset)
    # measured on a box-reduced copy of 128-255 px a side: pHash looks at 32 x 32 anyway, and the
    # reduction (not a Lanczos pass over every full-size pixel) is most of what it would cost
    probe = scaled.reduce(max(1, min(scaled.size) // 128))
    phash = str(imagehash.phash(probe))
    pixel_std = largest_channel_std(probe)
    shaped = _pad(_crop(scaled, preset), preset)
    unchanged = (
        source_format == "JPEG"
        and image.mode == "RGB"
        and not oriented
        and shaped is rgb
        and shaped.size == file_size  # not decoded smaller by the draft
        and preset.format == "jpg"
        and not getattr(image, "is_animated", False)
    )
    if unchanged:
        out = data
    elif max(shaped.size) > JPEG_MAX_SIDE and preset.format == "jpg":
        raise MediaError("too_large_side", f"{shaped.width}x{shaped.height}: JPEG stops at {JPEG_MAX_SIDE} px a side")
    else:
        buffer = io.BytesIO()
        shaped.save(buffer, format=FORMATS[preset.format], quality=preset.quality, compress_level=preset.compress_level)
        out = buffer.getvalue()
    return DecodedImage(
        data=out,
        ext=preset.format,
        width=shaped.width,
        height=shaped.height,
        source_format=source_format,
        phash=phash,
        oriented=oriented,
        pixel_std=round(pixel_std, 3),
    )


_LEVELS = np.arange(256, dtype=np.float64)


def largest_channel_std(image: Image.Image) -> float:
    """The largest per-channel standard deviation, from Pillow's histograms (numpy's std over the pixels
    is 6x slower; ImageStat sums the same histograms in Python loops, 2-3x slower)."""
    counts = np.asarray(image.histogram(), dtype=np.float64).reshape(-1, 256)
    n = counts.sum(axis=1)
    mean = counts @ _LEVELS / n
    variance = counts @ (_LEVELS * _LEVELS) / n - mean * mean
    return float(np.sqrt(np.maximum(variance, 0.0)).max())


def _open(data: bytes, max_pixels: int, preset: ImagePreset) -> tuple[Image.Image, str, tuple[int, int]]:
    """The image decoded (its first frame), its format, and its size in the file (a draft decodes it smaller)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max_pixels
            image = Image.open(io.BytesIO(data))
            source_format = image.format or "unknown"
            if getattr(image, "n_frames", 1) > 1 and preset.animated == "reject":
                raise MediaError("animated", f"{source_format} with {image.n_frames} frames")
            file_size = image.size
            target = scaled_size(image.size, preset)
            if target and source_format == "JPEG":  # DCT scaling: decodes at 1/2, 1/4, 1/8 where that is enough
                image.draft("RGB", target)
            image.load()  # decode every pixel (the first frame): lazy open() alone misses truncated files
    except UnidentifiedImageError:
        raise MediaError("not_an_image", "Pillow recognizes no image format in these bytes") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaError("too_many_pixels", str(e)) from None
    except OSError as e:
        code = "truncated" if "truncated" in str(e) else "corrupt"
        raise MediaError(code, str(e)) from None
    except (SyntaxError, ValueError) as e:  # Pillow raises these for some malformed headers
        raise MediaError("corrupt", str(e)) from None
    return image, source_format, file_size


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(0x0112)
    except Exception:  # a malformed EXIF block: treat as no orientation
        return None


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels of any mode: 16-bit and 32-bit grey scaled to 8 bits, transparency laid on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def scaled_size(size: tuple[int, int], preset: ImagePreset) -> tuple[int, int] | None:
    """The size the preset scales an image of this size (either orientation) to; None: left as it is."""
    goal, side = (preset.short_side, min(size)) if preset.short_side else (preset.long_side, max(size))
    if not goal or side == goal or (side < goal and not preset.upscale):
        return None
    return max(1, round(size[0] * goal / side)), max(1, round(size[1] * goal / side))


def _scale(image: Image.Image, preset: ImagePreset) -> Image.Image:
    size = scaled_size(image.size, preset)
    if size is None:  # (also where the draft decoded it at the size asked)
        return image
    if preset.resample == "area":  # img2dataset's defaults: OpenCV's INTER_AREA down, Lanczos up
        shrink = size[0] < image.width
        return image.resize(size, Image.Resampling.BOX if shrink else Image.Resampling.LANCZOS)
    # antialiased bilinear, torchvision's Resize default (bicubic cost 1.6x, Lanczos 2.3x here);
    # reducing_gap box-reduces large images by an integer factor first
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _crop(image: Image.Image, preset: ImagePreset) -> Image.Image:
    if preset.center_crop and min(image.size) >= preset.center_crop:
        left, top = (image.width - preset.center_crop) // 2, (image.height - preset.center_crop) // 2
        image = image.crop((left, top, left + preset.center_crop, top + preset.center_crop))
    return image


def _pad(image: Image.Image, preset: ImagePreset) -> Image.Image:
    """Centered on white, as img2dataset's border mode: only an image fitted to the square (a smaller one
    left at its size is not padded)."""
    if not preset.pad or max(image.size) != preset.pad or image.width == image.height:
        return image
    square = Image.new("RGB", (preset.pad, preset.pad), (255, 255, 255))
    square.paste(image, ((preset.pad - image.width) // 2, (preset.pad - image.height) // 2))
    return square


def as_published(width: int, height: int, ext: str, preset: ImagePreset) -> bool:
    """Whether an upright RGB image of this size, encoded as `ext`, is what the preset would publish of it
    (no resize, crop, pad or change of format): its bytes can be kept as they are."""
    side = preset.center_crop
    cropped = side and min(width, height) >= side and (width, height) != (side, side)
    padded = preset.pad and max(width, height) == preset.pad and width != height
    return ext == preset.format and scaled_size((width, height), preset) is None and not cropped and not padded


def crop(data: bytes, box: list[int], max_pixels: int = 64_000_000) -> tuple[bytes, str]:
    """The region (x, y, width, height, in the upright picture's pixels) cut out, as lossless PNG (clean
    encodes it once, as the recipe says). A box running over the edge is cut at it (annotators' boxes
    often pass it by a pixel or two); one with no pixel inside the picture is a MediaError."""
    image, _, _ = _open(data, max_pixels, ImagePreset())
    image = to_rgb(ImageOps.exif_transpose(image))
    x, y, width, height = box
    right, bottom = min(x + width, image.width), min(y + height, image.height)
    if right <= x or bottom <= y:
        raise MediaError("region_outside", f"box {box} is not inside the {image.width}x{image.height} picture")
    out = io.BytesIO()
    image.crop((x, y, right, bottom)).save(out, "PNG")
    return out.getvalue(), "png"
