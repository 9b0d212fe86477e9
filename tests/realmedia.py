"""Real recordings and photographs, and the copies a scraped corpus holds of them: re-encodes to another
codec or rate, trims, videos re-encoded at another resolution.

Speech: Debian's `asterisk-core-sounds-en-wav` (a woman reading telephone prompts, 8 kHz WAV),
installed by `make system`. Pictures: scikit-image's bundled photographs.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SPEECH = Path("/usr/share/asterisk/sounds/en_US_f_Allison")


def speech(count: int, min_seconds: float = 3.5) -> dict[str, np.ndarray]:
    """`count` distinct prompts of at least `min_seconds` (Chromaprint needs ~3 s), as 8 kHz int16."""
    found = {}
    for path in sorted(SPEECH.glob("*.wav")):
        if path.stat().st_size >= 2 * 8000 * min_seconds + 44:
            found[path.stem] = pcm(path.read_bytes())
            if len(found) == count:
                return found
    raise RuntimeError(f"need {count} speech prompts of {min_seconds}+ s under {SPEECH} (make system installs them)")


def pcm(data: bytes, rate: int = 8000) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        chunks = [f.to_ndarray().ravel() for frame in container.decode(audio=0) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().ravel() for f in resampler.resample(None)]
    return np.concatenate(chunks)


def encode_sound(
    samples: np.ndarray, fmt: str, codec: str, rate: int, source_rate: int = 8000, bit_rate: int | None = None
) -> bytes:
    """int16 mono samples at `source_rate` written as `fmt`/`codec` at `rate` (and `bit_rate` bit/s)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        if bit_rate:
            stream.bit_rate = bit_rate
        write_sound(out, stream, samples, source_rate)
    return buf.getvalue()


def write_sound(out, stream, samples: np.ndarray, source_rate: int) -> None:
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.int16), format="s16", layout="mono")
    frame.sample_rate = source_rate
    resampler = av.AudioResampler(
        format=stream.codec_context.format.name,
        layout="mono",
        rate=stream.codec_context.sample_rate,
        frame_size=stream.codec_context.frame_size or None,
    )
    for chunk in resampler.resample(frame) + resampler.resample(None):
        chunk.pts = None
        for packet in stream.encode(chunk):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


SOUND_EDITS = {
    "wav": lambda s: encode_sound(s, "wav", "pcm_s16le", 8000),
    "mp3": lambda s: encode_sound(s, "mp3", "libmp3lame", 16000),
    "flac16k": lambda s: encode_sound(s, "flac", "flac", 16000),
    "trim50": lambda s: encode_sound(s[400:], "wav", "pcm_s16le", 8000),  # 50 ms off the start
    "mp3-trim50-end": lambda s: encode_sound(s[:-400], "mp3", "libmp3lame", 22050),
}


def photo_video(
    photo: np.ndarray,
    size: tuple[int, int],
    seconds: float = 5.0,
    fps: int = 10,
    track: np.ndarray | None = None,
    crf: int = 23,
    keyframe_every: int | None = None,
) -> bytes:
    """An MP4 panning across a photograph (the camera moving), at `size`, with speech as its sound;
    `keyframe_every` frames a keyframe (as uploaded videos have every few seconds), else x264's default."""
    width, height = size
    view_h, view_w = photo.shape[0] * 2 // 3, photo.shape[1] * 2 // 3
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        options = {"crf": str(crf), **({"g": str(keyframe_every)} if keyframe_every else {})}
        video = out.add_stream("libx264", rate=fps, options=options)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=16000, layout="mono") if track is not None else None
        frames = round(seconds * fps)
        for i in range(frames):
            x = (photo.shape[1] - view_w) * i // max(frames - 1, 1)
            y = (photo.shape[0] - view_h) * i // max(frames - 1, 1)
            picture = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(photo[y : y + view_h, x : x + view_w]), format="rgb24"
            )
            picture = picture.reformat(width=width, height=height)
            picture.pts, picture.time_base = i, Fraction(1, fps)
            for packet in video.encode(picture):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        if audio is not None:
            write_sound(out, audio, track[: int(8000 * seconds)], 8000)
    return buf.getvalue()


def skimage_photos(names: tuple[str, ...]) -> dict[str, np.ndarray]:
    from skimage import color, data

    photos = {}
    for name in names:
        picture = getattr(data, name)()
        photos[name] = (color.gray2rgb(picture) if picture.ndim == 2 else picture[..., :3]).astype(np.uint8)
    return photos


ESPEAK_RATE = 22050


def spoken(text: str, voice: str = "en-us", speed: int = 160) -> np.ndarray:
    """`text` spoken by espeak-ng (Debian's `espeak-ng`, installed by `make system`) as 22,050 Hz int16,
    its leading and trailing silence cut off."""
    import subprocess

    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True, check=True
    )
    samples = pcm(wav.stdout, rate=ESPEAK_RATE)
    loud = np.flatnonzero(np.abs(samples) > 300)
    return samples[loud[0] : loud[-1] + 1] if len(loud) else samples
