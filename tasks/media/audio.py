"""Audio: PyAV (FFmpeg) decodes every frame of any container and codec; torchaudio resamples and computes
the log-mel spectrogram; the clip is published as FLAC.

Measured on the decoded samples (before any resampling), as scores: `rms_dbfs` (loudness),
`silence_ratio` (share of 20 ms windows under -50 dBFS) and `clipping_ratio` (share of samples at
full scale). A FLAC file that needs no change is published as it came. The clip is held in memory as
float32 while it is shaped (a minute of 48 kHz stereo is 23 MB).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import av
import numpy as np

from . import MediaError
from .fingerprint import SoundFingerprint

# A stream that declares its length and decodes to less than this fraction of it was cut short.
TRUNCATION_TOLERANCE = 0.98
# Containers that record an exact length. Others (MP3 without a Xing header, raw streams) only
# let FFmpeg estimate one from the bitrate, which would flag valid VBR files as truncated.
EXACT_LENGTH_FORMATS = {"flac", "ogg", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"}
WAV_SIZE_UNKNOWN = 0xFFFFFFFF  # what a WAV writer that could not seek leaves in the size fields


SILENCE_DBFS = -50.0
CLIPPED = 0.999  # |sample| at or above this (of full scale) counts as clipped


@dataclass(frozen=True)
class AudioPreset:
    """How clean shapes audio: None keeps the file's rate; `log_mel` {n_mels, n_fft, hop_length} adds
    a log-mel spectrogram of the (mono mix of the) published clip."""
    sample_rate: int | None = None
    mono: bool = False
    log_mel: tuple[tuple[str, int], ...] | None = None  # hashable: (("hop_length", 256), ...)


@dataclass
class DecodedAudio:
    data: bytes
    ext: str
    duration_s: float
    sample_rate: int  # of the published clip
    channels: int
    codec: str  # of the source
    fingerprint: list[int]  # raw Chromaprint (tasks/media/fingerprint.py)
    scores: dict[str, float]
    mel: bytes | None = None  # .npy, float16, n_mels x frames
    mel_params: dict | None = None


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


def decode_audio(data: bytes, preset: AudioPreset = AudioPreset()) -> DecodedAudio:
    with open_container(data) as container:
        if not container.streams.audio:
            raise MediaError("no_audio_stream", f"container {container.format.name} has no audio stream")
        stream = container.streams.audio[0]
        codec = stream.codec_context.name
        rate = stream.codec_context.sample_rate or stream.rate
        declared = declared_seconds(container, stream) if container.format.name in EXACT_LENGTH_FORMATS else None
        is_flac_file = container.format.name == "flac"  # FLAC inside Ogg or Matroska is re-muxed
        layout = stream.codec_context.layout.name
        missing = 0 if is_flac_file else wav_missing_bytes(data)
        samples, fingerprint = decode_samples(container, stream, rate)

    if samples.shape[1] == 0 or not rate:
        raise MediaError("empty", "no audio samples decoded")
    duration = samples.shape[1] / rate
    if missing:
        raise MediaError("truncated", f"the WAV data chunk is {missing} bytes short")
    if declared and duration < TRUNCATION_TOLERANCE * declared:
        raise MediaError("truncated", f"decoded {duration:.3f}s of a declared {declared:.3f}s")
    scores = loudness_scores(samples, rate)
    shaped, out_rate = shape(samples, rate, preset)
    unchanged = is_flac_file and shaped is samples
    mel, mel_params = log_mel(shaped, out_rate, dict(preset.log_mel)) if preset.log_mel else (None, None)
    layout = layout if shaped.shape[0] == samples.shape[0] else None
    return DecodedAudio(data=data if unchanged else encode_flac(shaped, out_rate, layout), ext="flac", duration_s=duration,
                        sample_rate=int(out_rate), channels=int(shaped.shape[0]), codec=codec,
                        fingerprint=fingerprint, scores=scores, mel=mel, mel_params=mel_params)


def decode_samples(container, stream, rate: int) -> tuple[np.ndarray, list[int]]:
    """Every sample as float32 (channels, n) at the stream's rate, and the Chromaprint, in one pass."""
    fingerprint = SoundFingerprint()
    chunks, decoded = [], 0
    try:
        resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout.name, rate=rate)
        for frame in container.decode(stream):
            decoded += frame.samples
            fingerprint.feed(frame)
            chunks += [f.to_ndarray() for f in resampler.resample(frame)]
        chunks += [f.to_ndarray() for f in resampler.resample(None)]
    except av.error.FFmpegError as e:
        raise MediaError("corrupt", f"decode failed after {decoded} samples: {e}") from None
    except ValueError as e:
        raise MediaError("unencodable", f"cannot convert {stream.codec_context.layout.name} at {rate} Hz: {e}") from None
    channels = stream.codec_context.channels or 1
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    return samples.astype(np.float32, copy=False), fingerprint.result()


def loudness_scores(samples: np.ndarray, rate: int) -> dict[str, float]:
    mix = samples.mean(axis=0)
    window = max(1, rate // 50)  # 20 ms
    usable = len(mix) // window * window
    frames = mix[:usable].reshape(-1, window) if usable else mix.reshape(1, -1)
    frame_db = 20 * np.log10(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) + 1e-12)
    rms = float(np.sqrt((mix.astype(np.float64) ** 2).mean()))
    return {"rms_dbfs": round(max(20 * np.log10(rms + 1e-12), -120.0), 2),
            "silence_ratio": round(float((frame_db < SILENCE_DBFS).mean()), 4),
            "clipping_ratio": round(float((np.abs(samples) >= CLIPPED).mean()), 6)}


def shape(samples: np.ndarray, rate: int, preset: AudioPreset) -> tuple[np.ndarray, int]:
    """Mono mix and resampling (torchaudio's band-limited sinc interpolation) as the preset asks."""
    if preset.mono and samples.shape[0] > 1:
        samples = samples.mean(axis=0, keepdims=True)
    if preset.sample_rate and preset.sample_rate != rate:
        import torch
        import torchaudio.functional as F

        samples = F.resample(torch.from_numpy(np.ascontiguousarray(samples)), rate, preset.sample_rate).numpy()
        rate = preset.sample_rate
    return samples, rate


def log_mel(samples: np.ndarray, rate: int, params: dict) -> tuple[bytes, dict]:
    """log(mel power + 1e-6) of the mono mix, float16 (n_mels, frames), as .npy bytes, and its parameters."""
    import torch
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate=rate, n_fft=params["n_fft"], hop_length=params["hop_length"],
                                               n_mels=params["n_mels"])(torch.from_numpy(samples.mean(axis=0)))
    values = torch.log(mel + 1e-6).numpy().astype(np.float16)
    out = io.BytesIO()
    np.save(out, values)
    return out.getvalue(), {**params, "sample_rate": rate, "frames": int(values.shape[1]), "dtype": "float16",
                            "log": "natural, of power + 1e-6"}


def encode_flac(samples: np.ndarray, rate: int, layout: str | None = None) -> bytes:
    layout = layout or {1: "mono", 2: "stereo"}.get(samples.shape[0], f"{samples.shape[0]}c")
    out_buf = io.BytesIO()
    try:
        with av.open(out_buf, mode="w", format="flac") as out:
            stream = out.add_stream("flac", rate=rate, layout=layout)
            resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
            for start in range(0, samples.shape[1], 8192):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 8192]), format="fltp",
                                                   layout=layout)
                frame.sample_rate = rate
                for piece in resampler.resample(frame):
                    out.mux(stream.encode(piece))
            for piece in resampler.resample(None):
                out.mux(stream.encode(piece))
            out.mux(stream.encode(None))
    except (av.error.FFmpegError, ValueError) as e:
        raise MediaError("unencodable", f"cannot write {samples.shape[0]} channels at {rate} Hz as FLAC: {e}") from None
    return out_buf.getvalue()
