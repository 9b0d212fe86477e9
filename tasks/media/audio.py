"""Audio with PyAV (FFmpeg): decode every frame, measure, normalize to FLAC in the same pass."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import av

from . import MediaError
from .fingerprint import SoundFingerprint

# A stream that declares its length and decodes to less than this fraction of it was cut short.
TRUNCATION_TOLERANCE = 0.98
# Containers that record an exact length. Others (MP3 without a Xing header, raw streams) only
# let FFmpeg estimate one from the bitrate, which would flag valid VBR files as truncated.
EXACT_LENGTH_FORMATS = {"flac", "ogg", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"}
WAV_SIZE_UNKNOWN = 0xFFFFFFFF  # what a WAV writer that could not seek leaves in the size fields


@dataclass
class DecodedAudio:
    data: bytes
    ext: str
    duration_s: float
    sample_rate: int
    channels: int
    codec: str
    fingerprint: list[int]  # raw Chromaprint (tasks/media/fingerprint.py)


def open_container(data: bytes) -> av.container.InputContainer:
    try:
        return av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError) as e:
        raise MediaError("corrupt", f"FFmpeg cannot open it: {e}") from None


def declared_seconds(container, stream) -> float | None:
    """The length the file claims: the stream's own, else the container's."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def wav_missing_bytes(data: bytes) -> int:
    """How many bytes of a WAV's data chunk are absent (FFmpeg infers WAV length from the file size)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if chunk == b"data":
            return 0 if size == WAV_SIZE_UNKNOWN else max(0, pos + 8 + size - len(data))
        pos += 8 + size + (size & 1)
    return 0


def decode_audio(data: bytes) -> DecodedAudio:
    with open_container(data) as container:
        if not container.streams.audio:
            raise MediaError("no_audio_stream", f"container {container.format.name} has no audio stream")
        stream = container.streams.audio[0]
        codec = stream.codec_context.name
        rate = stream.codec_context.sample_rate or stream.rate
        layout = stream.codec_context.layout.name
        channels = stream.codec_context.channels
        declared = declared_seconds(container, stream) if container.format.name in EXACT_LENGTH_FORMATS else None
        is_flac_file = container.format.name == "flac"  # FLAC inside Ogg or Matroska is re-muxed

        if is_flac_file:
            missing = 0
        else:
            missing = wav_missing_bytes(data)
            try:
                out_buf = io.BytesIO()
                out = av.open(out_buf, mode="w", format="flac")
                out_stream = out.add_stream("flac", rate=rate, layout=layout)
                resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
            except (av.error.FFmpegError, ValueError) as e:
                raise MediaError("unencodable", f"cannot write {channels} channels at {rate} Hz as FLAC: {e}") from None

        samples = 0
        fingerprint = SoundFingerprint()
        try:
            for frame in container.decode(stream):
                samples += frame.samples
                fingerprint.feed(frame)
                if not is_flac_file:
                    for resampled in resampler.resample(frame):
                        out.mux(out_stream.encode(resampled))
        except av.error.FFmpegError as e:
            raise MediaError("corrupt", f"decode failed after {samples} samples: {e}") from None
        if not is_flac_file:
            try:
                for resampled in resampler.resample(None):
                    out.mux(out_stream.encode(resampled))
                out.mux(out_stream.encode(None))
                out.close()
            except (av.error.FFmpegError, ValueError) as e:
                raise MediaError("unencodable", f"FLAC encoding failed: {e}") from None

    if samples == 0 or not rate:
        raise MediaError("empty", "no audio samples decoded")
    duration = samples / rate
    if missing:
        raise MediaError("truncated", f"the WAV data chunk is {missing} bytes short")
    if declared and duration < TRUNCATION_TOLERANCE * declared:
        raise MediaError("truncated", f"decoded {duration:.3f}s of a declared {declared:.3f}s")
    return DecodedAudio(
        data=data if is_flac_file else out_buf.getvalue(),
        ext="flac",
        duration_s=duration,
        sample_rate=int(rate),
        channels=int(channels),
        codec=codec,
        fingerprint=fingerprint.result(),
    )
