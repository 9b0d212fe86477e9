"""Tiny fixtures built in code."""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile

from PIL import Image

from tasks.core import storage
from tasks.core.schema import make_sample_id, samples_from_rows
from tasks.demo.corpus import encode_audio, encode_image, encode_video, tone


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


def texts(*captions: str, source: str = "t") -> list[dict]:
    return [{"text": c, "kind": "caption", "source": source} for c in captions]


def sample(
    modality="image",
    text="a red circle on a blue background",
    media=None,
    group=None,
    n=0,
    captions: tuple[str, ...] | None = None,
    **facts,
) -> dict:
    """An item; `captions` gives several texts, else `text` is its one caption."""
    uri = f"/src/{modality}/{n:04d}"
    return {
        "sample_id": make_sample_id("t", uri),
        "source": "t",
        "modality": modality,
        "group_id": group or uri,
        "texts": texts(*(captions if captions is not None else (text,))),
        "media_bytes": media,
        "media_size": len(media) if media else None,
        "source_uri": uri,
        "source_rows": [n],
        "partition": "p",
        "run_id": "r",
        **facts,
    }


def table(*rows):
    return samples_from_rows(list(rows))


def write_shards(tmp_path, rows, n_shards) -> list[str]:
    """`rows` dealt round-robin into `n_shards` work shards; their URIs."""
    uris = []
    for i in range(n_shards):
        uri = str(tmp_path / f"shard-{i:05d}.parquet")
        storage.write_parquet(uri, table(*rows[i::n_shards]))
        uris.append(uri)
    return uris


def matroska_video(seconds: float = 4.0) -> bytes:
    """An MKV with no frame count in its header: truncation shows only against the container's duration."""
    from fractions import Fraction

    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(int(seconds * 10)):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 10 % 255, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def flac_in_matroska(seconds: float = 2.0) -> bytes:
    import av
    import numpy as np

    from tasks.demo.corpus import SAMPLE_RATE

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
        pcm = (tone(440.0, seconds, True) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        out.mux(stream.encode(frame))
        for packet in stream.encode(None):
            try:
                out.mux(packet)
            except av.error.ArgumentError:  # Matroska refuses FLAC's trailing header-update packet
                pass
    return buf.getvalue()


def wide_png(width: int = 70_000) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, 10)).save(out, format="PNG")
    return out.getvalue()


def timed_video(fmt: str, times: list[float], audio_seconds: float | None = None) -> bytes:
    """A video whose frames sit at the given times (variable rate, late start), with an optional hum."""
    from fractions import Fraction

    import av
    import numpy as np

    from tasks.demo.corpus import SAMPLE_RATE

    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=30)  # a tick fine enough for every frame time used here
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        hum = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono") if audio_seconds else None
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 37 % 255, np.uint8), format="rgb24")
            frame.time_base, frame.pts = Fraction(1, 1000), round(t * 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if hum is not None:
            samples = tone(220.0, audio_seconds, False).reshape(1, -1)
            for start in range(0, samples.shape[1], 1024):
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(samples[:, start : start + 1024]), format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = SAMPLE_RATE, start
                out.mux(hum.encode(chunk))
            out.mux(hum.encode(None))
    return buf.getvalue()


def tree_digest(root: str, skip=("manifest.json",)) -> dict[str, str]:
    return {
        name: hashlib.sha256(storage.read_bytes(storage.join(root, name))).hexdigest()
        for name in storage.list_files(root)
        if name not in skip
    }


def noise_flac(seconds: float, seed: int = 0) -> bytes:
    """Big, incompressible audio (about 190 kB a second), quick to make: for memory tests."""
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=48_000, layout="stereo")
        for _ in range(int(seconds)):
            frame = av.AudioFrame.from_ndarray(
                rng.integers(-20_000, 20_000, size=(1, 96_000), dtype=np.int16), format="s16", layout="stereo"
            )
            frame.sample_rate = 48_000
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def build_in_process(sources, root: str, recipe=None, workers: int = 2, partition: str = "p", dry_run: bool = False):
    """A whole build through the build's own plan and order (tasks/build/pipeline.py), every piece in this
    process: returns (layout, manifest), or (layout, the dry run's result)."""
    from tasks.build.pipeline import build_locally
    from tasks.recipe import Recipe

    recipe = recipe or Recipe(name="t", sources=tuple(sources))
    layout, result = build_locally(recipe, root, partition, workers, dry_run)
    return layout, result if dry_run else result["manifest"]


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")


def real_photos(turns: int = 1) -> dict[str, bytes]:
    """Real photographs that scikit-image ships, as JPEGs at their full size (50-400 kB, about COCO's),
    each also turned by 90, 180, 270 degrees when `turns` asks for more distinct pictures."""
    from skimage import data

    photos = {}
    for name in PHOTOS:
        picture = Image.fromarray(getattr(data, name)()).convert("RGB")
        for turn in range(turns):
            out = io.BytesIO()
            picture.rotate(90 * turn, expand=True).save(out, format="JPEG", quality=95)
            photos[f"{name}-{90 * turn}"] = out.getvalue()
    return photos


def tar_members(version: str) -> dict[str, dict[str, bytes]]:
    """key -> {extension: bytes} over every tar of a published version."""
    manifest = json.loads(storage.read_bytes(f"{version}/manifest.json"))
    out: dict[str, dict[str, bytes]] = {}
    for split in manifest["splits"].values():
        for tar in split["tars"]:
            with tarfile.open(f"{version}/{tar}") as archive:
                for member in archive.getmembers():
                    key, _, ext = member.name.partition(".")
                    out.setdefault(key, {})[ext] = archive.extractfile(member).read()
    return out
