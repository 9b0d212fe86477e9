"""Audio with PyAV (FFmpeg): decode every frame, measure, normalize to FLAC in the same pass."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av

from . import MediaError

# A stream that declares its length and decodes to less than this fraction of it was cut short.
TRUNCATION_TOLERANCE = 0.98


@dataclass
class DecodedAudio:
    data: bytes
    ext: str
    duration_s: float
    sample_rate: int
    channels: int
    codec: str


def open_container(data: bytes) -> av.container.InputContainer:
    try:
        return av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError) as e:
        raise MediaError("corrupt", f"FFmpeg cannot open it: {e}") from None


def declared_seconds(stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def decode_audio(data: bytes) -> DecodedAudio:
    with open_container(data) as container:
        if not container.streams.audio:
            raise MediaError("no_audio_stream", f"container {container.format.name} has no audio stream")
        stream = container.streams.audio[0]
        codec = stream.codec_context.name
        rate = stream.codec_context.sample_rate or stream.rate
        layout = stream.codec_context.layout.name
        channels = stream.codec_context.channels
        declared = declared_seconds(stream)

        transcode = codec != "flac"
        if transcode:
            out_buf = io.BytesIO()
            out = av.open(out_buf, mode="w", format="flac")
            out_stream = out.add_stream("flac", rate=rate, layout=layout)
            resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)

        samples = 0
        try:
            for frame in container.decode(stream):
                samples += frame.samples
                if transcode:
                    for resampled in resampler.resample(frame):
                        out.mux(out_stream.encode(resampled))
        except av.error.FFmpegError as e:
            raise MediaError("corrupt", f"decode failed after {samples} samples: {e}") from None
        if transcode:
            for resampled in resampler.resample(None):
                out.mux(out_stream.encode(resampled))
            out.mux(out_stream.encode(None))
            out.close()

    if samples == 0 or not rate:
        raise MediaError("empty", "no audio samples decoded")
    duration = samples / rate
    if declared and duration < TRUNCATION_TOLERANCE * declared:
        raise MediaError("truncated", f"decoded {duration:.3f}s of a declared {declared:.3f}s")
    return DecodedAudio(
        data=out_buf.getvalue() if transcode else data,
        ext="flac",
        duration_s=duration,
        sample_rate=int(rate),
        channels=int(channels),
        codec=codec,
    )
