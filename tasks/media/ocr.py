"""Text in pictures: PP-OCRv6's text detector and recogniser (ONNX models inside the `rapidocr` wheel, run by
ONNX Runtime on one thread; nothing is downloaded).

`detect` finds the text lines' boxes: the `text_area` score is the share of the picture they cover (their
union, so overlapping boxes count once). `read` also recognises each line: the lines, top to bottom, become
one text of kind `ocr`. Screenshots, slides, memes and posters measure high; a photograph with a sign in
it low. The detector sees the picture with its longer side at most `DETECT_SIDE` (never scaled up).
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from . import MediaError

OcrMode = Literal["off", "detect", "read"]
DETECT_SIDE = 960  # PP-OCR's detector at up to this long side: a 640 px picture as it is, a 4K one in ~0.2 s
AREA_SIDE = 256  # the boxes' union is counted on a mask this wide: a share, not pixels, is wanted
MIN_LINE_SCORE = 0.5  # a recognised line the recogniser is less sure of is not kept
# a box at least this many times as long as it is high: a line of two or more characters. The detector also
# boxes round things whole (a coffee cup, a retina, a clock face, read as "8" or "O") and pixel art (read as
# CJK characters): such boxes are near square, and counting them would call a photograph text-heavy
MIN_LINE_ASPECT = 1.5


@dataclass(frozen=True)
class Reading:
    text_area: float  # share of the picture inside text boxes, 0-1
    lines: tuple[str, ...]  # recognised lines, top to bottom (empty when only detecting)

    @property
    def text(self) -> str:
        return " ".join(self.lines)


@functools.cache
def _engine():
    """The detector and recogniser, loaded once per process (the first call, ~0.1 s)."""
    from rapidocr import RapidOCR

    return RapidOCR(
        params={
            "Global.use_cls": False,  # text upside down is rare in pictures; its model would be a third pass
            "Global.log_level": "error",  # it warns on every picture without text otherwise
            "Global.text_score": MIN_LINE_SCORE,
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            "Det.limit_type": "max",
            "Det.limit_side_len": DETECT_SIDE,
        }
    )


def read_picture(picture: np.ndarray, mode: OcrMode) -> Reading:
    """Text in an RGB picture (height x width x 3, uint8)."""
    found = _engine()(np.ascontiguousarray(picture[..., ::-1]), use_cls=False, use_rec=mode == "read")
    found_boxes = getattr(found, "boxes", None)
    boxes = np.asarray(found_boxes if found_boxes is not None else [], np.float64).reshape(-1, 4, 2)
    lines = np.asarray(getattr(found, "txts", None) or [""] * len(boxes), object)
    if len(lines) != len(boxes):  # not one line a box (never seen): no line can be checked against its box
        lines = np.asarray([""] * len(boxes), object)
    sides = np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=1), np.linalg.norm(boxes[:, 3] - boxes[:, 0], axis=1)
    is_line = np.maximum(*sides) >= MIN_LINE_ASPECT * np.maximum(np.minimum(*sides), 1.0)
    if not is_line.any():
        return Reading(0.0, ())
    return Reading(_covered(boxes[is_line], picture.shape[:2]), tuple(t for t in lines[is_line] if t.strip()))


def _covered(boxes: np.ndarray, shape: tuple[int, int]) -> float:
    """The share of a picture of `shape` (height, width) inside the union of quadrilateral `boxes` (n x 4 x 2)."""
    height, width = shape
    scale = min(AREA_SIDE / max(height, width), 1.0)
    mask = np.zeros((max(round(height * scale), 1), max(round(width * scale), 1)), np.uint8)
    cv2.fillPoly(mask, list(np.round(boxes * scale).astype(np.int32)), 1)
    return float(mask.mean())


def read_image(data: bytes, mode: OcrMode) -> Reading:
    """Text in an encoded picture (a published JPEG, PNG or WebP, or a video's keyframe)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            picture = np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as e:
        raise MediaError("corrupt", f"cannot read the picture for OCR: {e}") from None
    return read_picture(picture, mode)


def read_frames(frames: list[bytes], mode: OcrMode) -> Reading:
    """Text over a video's keyframes: the median share (a title card alone does not make a video text-heavy)
    and each distinct line once, in the order the frames show them."""
    readings = [read_image(frame, mode) for frame in frames]
    if not readings:
        return Reading(0.0, ())
    lines = dict.fromkeys(line for r in readings for line in r.lines)
    return Reading(float(np.median([r.text_area for r in readings])), tuple(lines))
