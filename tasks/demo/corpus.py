"""The offline demo corpus: synthetic images, audio clips and videos with captions, plus planted problems.

Deterministic (seeded), made on the fly so the demo and the tests need no network. Every planted
problem is listed in PLANTED with the reject reason the pipeline must give it.
"""

from __future__ import annotations

import io
import json
import math
import random
from fractions import Fraction

import av
import numpy as np
from PIL import Image, ImageDraw

from ..core import storage

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "cross")
# Not octaves apart: Chromaprint hears pitch class (chroma), so 220/440/880 Hz tones are one sound to it
PITCHES = {"low": 220.0, "middle": 294.0, "high": 415.0}
SAMPLE_RATE = 16_000

# file name -> the reject reason the pipeline must give it (tests check every one)
PLANTED = {
    "image/truncated.jpg": "decode:truncated",
    "image/not_really.jpg": "decode:not_an_image",
    "image/tiny.jpg": "filter:image_too_small",
    "image/empty_caption.jpg": "text:empty",
    "audio/garbage.flac": "decode:corrupt",
    "audio/too_short.flac": "filter:audio_too_short",
    "audio/is_a_picture.flac": "decode:no_audio_stream",
    "video/truncated.mp4": "decode:corrupt",
    "video/too_short.mp4": "filter:video_too_short",
    "video/silent.mp4": "align:no_audio_track",
    "video/drifting.mp4": "align:av_drift",
    "missing/nowhere.jpg": "collect:missing_media",
}
# exact duplicates: (copy, original), the same bytes under another name -> one of the two is a
# duplicate:exact reject and the other keeps both their texts (the first three repeat the caption too)
DUPLICATES = [
    ("image/dup_of_0000.jpg", "image/0000.jpg"),
    ("audio/dup_of_0000.flac", "audio/0000.flac"),
    ("video/dup_of_0000.mp4", "video/0000.mp4"),
    ("image/renamed_0001.jpg", "image/0001.jpg"),
]
RENAMED_CAPTION = "the same picture, renamed"
BROKEN_ROWS = 3  # manifest lines that are not valid rows -> collect:bad_row


def encode_image(rng: random.Random, size: tuple[int, int], fmt: str = "JPEG") -> tuple[bytes, str]:
    fg_name, bg_name = rng.sample(sorted(COLORS), 2)
    shape = rng.choice(SHAPES)
    w, h = size
    image = Image.new("RGB", size, COLORS[bg_name])
    draw = ImageDraw.Draw(image)
    # a few faint large blobs in the background: flat graphics that differ only in a small shape's
    # colour look alike to a perceptual hash (it sees luminance at low frequencies)
    for _ in range(4):
        x, y = rng.randrange(w), rng.randrange(h)
        blob = rng.randint(min(w, h) // 3, max(w, h))
        shade = tuple(min(255, max(0, c + rng.randint(-60, 60))) for c in COLORS[bg_name])
        draw.ellipse((x - blob, y - blob, x + blob, y + blob), fill=shade)
    r = rng.randint(min(w, h) // 6, min(w, h) // 3)
    cx, cy = rng.randint(r, w - r), rng.randint(r, h - r)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=COLORS[fg_name])
    elif shape == "square":
        draw.rectangle(box, fill=COLORS[fg_name])
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLORS[fg_name])
    else:
        draw.rectangle((cx - r, cy - r // 4, cx + r, cy + r // 4), fill=COLORS[fg_name])
        draw.rectangle((cx - r // 4, cy - r, cx + r // 4, cy + r), fill=COLORS[fg_name])
    for _ in range(rng.randint(0, 6)):  # a little texture so perceptual hashes differ
        x, y = rng.randrange(w), rng.randrange(h)
        draw.point((x, y), fill=COLORS[rng.choice(sorted(COLORS))])
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue(), f"a {fg_name} {shape} on a {bg_name} background"


def tone(freq: float, seconds: float, rising: bool) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    sweep = freq * (1 + (0.5 if rising else -0.3) * t / max(seconds, 1e-6))
    return (0.3 * np.sin(2 * math.pi * np.cumsum(sweep) / SAMPLE_RATE)).astype(np.float32)


def encode_audio(samples: np.ndarray, fmt: str = "flac") -> bytes:
    buf = io.BytesIO()
    codec = {"flac": "flac", "wav": "pcm_s16le"}[fmt]
    with av.open(buf, mode="w", format=fmt) as out:
        stream = out.add_stream(codec, rate=SAMPLE_RATE, layout="mono")
        pcm = (samples * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def encode_video(rng: random.Random, seconds: float, audio_seconds: float | None, fps: int = 10) -> tuple[bytes, str]:
    """A colored square moving across a gray field, with a hum as its audio track (or none)."""
    color_name = rng.choice(sorted(COLORS))
    direction = rng.choice(("left", "right"))
    pitch_name = rng.choice(sorted(PITCHES))
    w, h, side = 64, 48, 12
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        vstream = out.add_stream("libx264", rate=fps)
        vstream.width, vstream.height, vstream.pix_fmt = w, h, "yuv420p"
        vstream.codec_context.thread_count = 1  # deterministic bytes
        astream = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono") if audio_seconds else None
        n = max(1, round(seconds * fps))
        for i in range(n):
            frame = np.full((h, w, 3), 128, np.uint8)
            x = int((w - side) * (i / max(n - 1, 1)))
            x = x if direction == "right" else w - side - x
            frame[h // 2 - side // 2 : h // 2 + side // 2, x : x + side] = COLORS[color_name]
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            for packet in vstream.encode(vf):
                out.mux(packet)
        for packet in vstream.encode(None):
            out.mux(packet)
        if astream is not None:
            hum = tone(PITCHES[pitch_name], audio_seconds, rising=False).reshape(1, -1)
            for start in range(0, hum.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(hum[:, start : start + 1024]), format="fltp", layout="mono"
                )
                af.sample_rate, af.pts = SAMPLE_RATE, start
                for packet in astream.encode(af):
                    out.mux(packet)
            for packet in astream.encode(None):
                out.mux(packet)
    caption = f"a {color_name} square moving {direction} with a {pitch_name} hum"
    return buf.getvalue(), caption


def build_demo_corpus(folder: str, n_images: int = 200, n_audio: int = 48, n_video: int = 24, seed: int = 7) -> str:
    """Write the corpus and its JSONL manifest under `folder`; return the manifest URI."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    rows: list[dict] = []

    for i in range(n_images):
        fmt = "PNG" if i % 5 == 4 else "JPEG"  # some PNGs, to exercise normalization to JPEG
        data, caption = encode_image(rng, (rng.randint(64, 160), rng.randint(64, 160)), fmt)
        name = f"image/{i:04d}.{'png' if fmt == 'PNG' else 'jpg'}"
        files[name] = data
        for k in range(1 + i % 3):  # 1-3 captions per image, one group
            rows.append({"media": name, "modality": "image", "text": caption if k == 0 else f"{caption}, view {k}"})
    for i in range(n_audio):
        pitch = rng.choice(sorted(PITCHES))
        rising = rng.random() < 0.5
        fmt = "wav" if i % 4 == 3 else "flac"
        name = f"audio/{i:04d}.{fmt}"
        # under 2.5 s, too short for a Chromaprint: two sweeps of one pitch and direction would be one
        # sound to it (they are), and the demo's duplicates are the planted ones
        files[name] = encode_audio(tone(PITCHES[pitch], rng.uniform(0.8, 2.5), rising), fmt)
        rows.append(
            {"media": name, "modality": "audio", "text": f"a {pitch} tone that {'rises' if rising else 'falls'}"}
        )
    for i in range(n_video):
        seconds = rng.uniform(1.0, 2.0)
        files[f"video/{i:04d}.mp4"], caption = encode_video(rng, seconds, seconds)
        rows.append({"media": f"video/{i:04d}.mp4", "modality": "video", "text": caption})

    plant_problems(rng, files, rows)

    lines = [json.dumps(r, sort_keys=True) for r in rows]
    rng.shuffle(lines)  # so shards mix modalities, as real annotation files do
    lines[5:5] = [
        '{"media": "image/0002.jpg", "text": ',
        '{"text": "a row without media"}',
        '{"media": "image/0003.jpg", "modality": "hologram", "text": "unknown modality"}',
    ]
    for name, data in sorted(files.items()):
        storage.write_bytes(storage.join(folder, name), data)
    manifest = storage.join(folder, "captions.jsonl")
    storage.write_bytes(manifest, ("\n".join(lines) + "\n").encode())
    return manifest


def plant_problems(rng: random.Random, files: dict[str, bytes], rows: list[dict]) -> None:
    """Broken, wrong and duplicate media, and their rows: what the build must reject, each with a reason."""
    good_jpeg = files["image/0000.jpg"]
    files["image/truncated.jpg"] = good_jpeg[: len(good_jpeg) // 2]
    files["image/not_really.jpg"] = b"<html>this is an error page, not an image</html>"
    files["image/tiny.jpg"], _ = encode_image(rng, (16, 16))
    files["image/empty_caption.jpg"], _ = encode_image(rng, (96, 96))
    files["audio/garbage.flac"] = bytes(rng.randrange(256) for _ in range(4096))
    files["audio/too_short.flac"] = encode_audio(tone(440.0, 0.2, True))
    files["audio/is_a_picture.flac"] = good_jpeg
    files["video/truncated.mp4"] = files["video/0000.mp4"][: len(files["video/0000.mp4"]) // 2]
    files["video/too_short.mp4"], _ = encode_video(rng, 0.2, 0.2)
    files["video/silent.mp4"], _ = encode_video(rng, 1.5, None)
    files["video/drifting.mp4"], _ = encode_video(rng, 2.0, 0.5)
    captions = {"image/empty_caption.jpg": "   "}
    for name in PLANTED:
        modality = name.split("/")[0] if not name.startswith("missing/") else "image"
        rows.append({"media": name, "modality": modality, "text": captions.get(name, f"planted problem {name}")})
    for copy, original in DUPLICATES:
        files[copy] = files[original]
        first = next(r for r in rows if r["media"] == original)
        rows.append({**first, "media": copy, "text": RENAMED_CAPTION if "renamed" in copy else first["text"]})
