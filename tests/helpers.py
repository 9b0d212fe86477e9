"""Tiny fixtures built in code."""

from __future__ import annotations

import io
import random

from PIL import Image

from tasks.demo_corpus import encode_audio, encode_image, encode_video, tone
from tasks.schema import make_sample_id, samples_from_rows


def image_bytes(size=(80, 60), fmt="JPEG", seed=0) -> bytes:
    return encode_image(random.Random(seed), size, fmt)[0]


def audio_bytes(seconds=1.0, fmt="flac") -> bytes:
    return encode_audio(tone(440.0, seconds, True), fmt)


def video_bytes(seconds=1.0, audio_seconds=1.0, seed=0) -> bytes:
    return encode_video(random.Random(seed), seconds, audio_seconds)[0]


def png_with_alpha() -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (50, 40), (10, 20, 30, 128)).save(out, format="PNG")
    return out.getvalue()


def sample(modality="image", text="a red circle on a blue background", media=None, group=None, n=0, **facts) -> dict:
    uri = f"/src/{modality}/{n:04d}"
    return {"sample_id": make_sample_id("t", f"{n}:{uri}", text), "source": "t", "modality": modality,
            "group_id": group or uri, "text": text, "media_bytes": media, "source_uri": uri, "source_row": n,
            "partition": "p", "run_id": "r", **facts}


def table(*rows):
    return samples_from_rows(list(rows))
