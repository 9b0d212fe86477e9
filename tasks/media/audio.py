"""Audio: PyAV (FFmpeg) decodes every frame of any container and codec; torchaudio resamples and computes
the log-mel spectrogram; the clip is published as FLAC.

Measured on the decoded samples (before any resampling), as scores: `rms_dbfs` (loudness),
`silence_ratio` (share of 20 ms windows under -50 dBFS) and `clipping_ratio` (share of samples at
full scale). A FLAC file that needs no change is published as it came; other files stream into FLAC
frame by frame. Only when torchaudio resamples, mixes down or computes the log-mel is the whole clip
held, as float32 (a minute of 48 kHz stereo is 23 MB).
"""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass

import av
import numpy as np
from pydantic import Field, model_validator

from ..core.settings import Strict
from . import MediaError
from .fingerprint import SoundFingerprint


class AudioCleanConfig(Strict):
    """How audio is published (FLAC): resampled by torchaudio to `sample_rate` (null: the file's own),
    mixed down to one channel with `mono`."""

    sample_rate: int | None = Field(None, ge=1000, le=384_000)
    mono: bool = False
    # find where a voice speaks (Silero VAD, tasks/media/speech.py): the `speech_ratio` score and the speech
    # segments in the item's features, which filter.min_speech_ratio / max_speech_ratio judge
    voice_activity: bool = False
    # with voice_activity: publish a recording from its first word to its last (its window, clip_start_s /
    # clip_end_s, moves with it); one with no speech is kept whole
    trim_to_speech: bool = False

    @model_validator(mode="after")
    def _trim_needs_speech(self):
        if self.trim_to_speech and not self.voice_activity:
            raise ValueError("trim_to_speech trims to the speech voice_activity finds: set voice_activity: true")
        return self


class LogMelConfig(Strict):
    n_mels: int = Field(80, ge=8, le=512)
    n_fft: int = Field(1024, ge=64)
    hop_length: int = Field(256, ge=16)


# A stream that declares its length and decodes to less than this fraction of it was cut short.
TRUNCATION_TOLERANCE = 0.98
# ...or by more than this: a codec's priming and padding (Opus's pre-skip) make a short file declare
# ~10 ms more than it decodes, which is 4% of a 0.25 s clip
TRUNCATION_SLACK_S = 0.05
# Containers that record an exact length. Others (MP3 without a Xing header, raw streams) only
# let FFmpeg estimate one from the bitrate, which would flag valid VBR files as truncated.
EXACT_LENGTH_FORMATS = {"flac", "ogg", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"}
WAV_SIZE_UNKNOWN = 0xFFFFFFFF  # what a WAV writer that could not seek leaves in the size fields


SILENCE_DBFS = -50.0
SPECTRUM_FFT = 2048  # samples per block of the bandwidth measure
BANDWIDTH_DB = 70.0  # a frequency this far under the strongest holds nothing (a resampler's stop band)
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
    sound_print: list[int]  # a short clip's coarse log-mel (tasks/media/fingerprint.py); empty otherwise
    landmarks: list[int]  # of its first 4 s (tasks/media/landmarks.py)
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
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
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
        layout = stream.codec_context.layout.name
        channels = stream.codec_context.channels or 1
        declared = declared_seconds(container, stream) if container.format.name in EXACT_LENGTH_FORMATS else None
        is_flac_file = container.format.name == "flac"  # FLAC inside Ogg or Matroska is re-muxed
        missing = 0 if is_flac_file else wav_missing_bytes(data)
        # the whole clip is held only when torchaudio must see it; otherwise it streams through
        shaping = bool(
            preset.log_mel or (preset.mono and channels > 1) or (preset.sample_rate and preset.sample_rate != rate)
        )
        encoder = None if is_flac_file or shaping else FlacStream(rate, layout)
        sound = SoundAnalysis(rate, layout, hold=shaping)
        decoded = 0
        try:
            for frame in container.decode(stream):
                decoded += frame.samples
                sound.feed(frame)
                if encoder is not None:
                    encoder.feed(frame)
            sound.finish()
            out = encoder.finish() if encoder is not None else None
        except av.error.FFmpegError as e:
            raise MediaError("corrupt", f"decode failed after {decoded} samples: {e}") from None
        except ValueError as e:
            raise MediaError("unencodable", f"cannot write {channels} channels at {rate} Hz: {e}") from None

    duration = _checked_length(decoded, rate, missing, declared)
    mel = mel_params = None
    out_rate, out_channels = rate, channels
    if shaping:
        shaped, out_rate = shape(sound.samples(), rate, preset)
        if preset.log_mel:
            mel, mel_params = log_mel(shaped, out_rate, dict(preset.log_mel))
        out_channels = shaped.shape[0]
        out = encode_flac(shaped, out_rate, layout if out_channels == channels else None)
    return DecodedAudio(
        data=data if out is None else out,
        ext="flac",
        duration_s=duration,
        sample_rate=int(out_rate),
        channels=int(out_channels),
        codec=codec,
        fingerprint=sound.fingerprint.result(),
        sound_print=sound.fingerprint.short_print(),
        landmarks=sound.fingerprint.landmarks(),
        scores=sound.meter.scores(),
        mel=mel,
        mel_params=mel_params,
    )


def _checked_length(decoded: int, rate: int, missing: int, declared: float | None) -> float:
    """The clip's length in seconds; MediaError when nothing decoded or the file is cut short."""
    if decoded == 0 or not rate:
        raise MediaError("empty", "no audio samples decoded")
    duration = decoded / rate
    if missing:
        raise MediaError("truncated", f"the WAV data chunk is {missing} bytes short")
    if declared and declared - duration > max((1 - TRUNCATION_TOLERANCE) * declared, TRUNCATION_SLACK_S):
        raise MediaError("truncated", f"decoded {duration:.3f}s of a declared {declared:.3f}s")
    return duration


class SoundAnalysis:
    """What every decoded sound (a clip, a video's track) goes through frame by frame: loudness, the
    Chromaprint fingerprint, and, with `hold`, the float32 samples torchaudio will need whole."""

    def __init__(self, rate: int, layout: str, hold: bool = False):
        self.as_float = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        self.meter, self.fingerprint = LoudnessMeter(rate), SoundFingerprint()
        self.held: list[np.ndarray] | None = [] if hold else None

    def feed(self, frame: av.AudioFrame) -> None:
        self.fingerprint.feed(frame)
        for piece in self.as_float.resample(frame):
            self.meter.feed(piece.to_ndarray(), self.held)

    def finish(self) -> None:
        for piece in self.as_float.resample(None):
            self.meter.feed(piece.to_ndarray(), self.held)

    def samples(self) -> np.ndarray:
        """The held clip, channels x samples (handed over once: the list is let go)."""
        held, self.held = self.held, None
        return np.concatenate(held, axis=1)


class LoudnessMeter:
    """`rms_dbfs`, `silence_ratio` (20 ms windows under SILENCE_DBFS) and `clipping_ratio`, fed one
    decoded frame (float, channels x n) at a time; `held` (a list) also keeps the frames."""

    def __init__(self, rate: int):
        self.rate = int(rate)
        self.window = max(1, int(rate) // 50)
        self.pending = np.zeros(0, np.float64)
        self.energy = self.samples = self.values = self.clipped = self.silent = self.windows = 0
        self.spectrum = np.zeros(SPECTRUM_FFT // 2 + 1)  # power of every 4th block, for `bandwidth_hz`
        self.spectrum_pending, self.blocks_seen = np.zeros(0, np.float64), 0

    def feed(self, frame: np.ndarray, held: list | None = None) -> None:
        if held is not None:
            held.append(frame)
        self.clipped += int(np.count_nonzero(np.abs(frame) >= CLIPPED))
        self.values += frame.size
        mix = frame.mean(axis=0, dtype=np.float64)
        self.energy += float(mix @ mix)
        self.samples += len(mix)
        buffer = np.concatenate([self.pending, mix])
        whole = len(buffer) // self.window * self.window
        self._count(buffer[:whole])
        self.pending = buffer[whole:]

    def _count(self, mix: np.ndarray) -> None:
        if len(mix):
            windows = mix.reshape(-1, min(self.window, len(mix)))
            db = 10 * np.log10((windows**2).mean(axis=1) + 1e-24)
            self.silent += int(np.count_nonzero(db < SILENCE_DBFS))
            self.windows += len(windows)
            self._spectrum(mix)

    def _spectrum(self, mix: np.ndarray) -> None:
        buffer = np.concatenate([self.spectrum_pending, mix])
        blocks = len(buffer) // SPECTRUM_FFT
        whole = buffer[: blocks * SPECTRUM_FFT].reshape(blocks, SPECTRUM_FFT)
        sampled = whole[(self.blocks_seen + np.arange(blocks)) % 4 == 0]  # every 4th block: cheap, enough
        if len(sampled):
            self.spectrum += (np.abs(np.fft.rfft(sampled * np.hanning(SPECTRUM_FFT), axis=1)) ** 2).sum(axis=0)
        self.blocks_seen += blocks
        self.spectrum_pending = buffer[blocks * SPECTRUM_FFT :]

    def scores(self) -> dict[str, float]:
        if self.windows == 0:  # a clip shorter than one window is judged as one
            self._count(self.pending)
        rms = (self.energy / max(self.samples, 1)) ** 0.5
        return {
            "rms_dbfs": round(max(20 * np.log10(rms + 1e-12), -120.0), 2),
            "silence_ratio": round(self.silent / max(self.windows, 1), 4),
            "clipping_ratio": round(self.clipped / max(self.values, 1), 6),
            "bandwidth_hz": self.bandwidth(),
        }

    def bandwidth(self) -> float:
        """The highest frequency with power within BANDWIDTH_DB of the strongest: what the recording really
        holds (a clip resampled up from 8 kHz has nothing above 4 kHz, whatever its rate says)."""
        if self.blocks_seen == 0 and len(self.spectrum_pending):  # a clip shorter than one block: windowed whole
            short = self.spectrum_pending * np.hanning(len(self.spectrum_pending))
            self.spectrum += np.abs(np.fft.rfft(short, SPECTRUM_FFT)) ** 2
        total = self.spectrum.sum()
        if total <= 0:
            return round(self.rate / 2, 1)
        db = 10 * np.log10(self.spectrum + total * 1e-15)
        above = np.flatnonzero(db >= db.max() - BANDWIDTH_DB)
        return round(float(above[-1]) * self.rate / SPECTRUM_FFT, 1)


class FlacStream:
    """Frames in, FLAC bytes out, at the source's rate and layout, without holding the clip."""

    def __init__(self, rate: int, layout: str):
        self.buffer = io.BytesIO()
        self.out = av.open(self.buffer, mode="w", format="flac")
        self.stream = self.out.add_stream("flac", rate=rate, layout=layout)
        self.resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)

    def feed(self, frame: av.AudioFrame | None) -> None:
        for piece in self.resampler.resample(frame):
            self.out.mux(self.stream.encode(piece))

    def finish(self) -> bytes:
        self.feed(None)
        self.out.mux(self.stream.encode(None))
        self.out.close()
        return self.buffer.getvalue()


def mono_at(data: bytes, rate: int, seconds: float) -> np.ndarray:
    """The first `seconds` of a clip, mixed to mono and resampled to `rate` (as clean shapes audio), float32."""
    with open_container(data) as container:
        if not container.streams.audio:
            raise MediaError("no_audio_stream", f"container {container.format.name} has no audio stream")
        stream = container.streams.audio[0]
        native = stream.codec_context.sample_rate or stream.rate
        as_float = av.AudioResampler(format="fltp", layout=stream.codec_context.layout.name, rate=native)
        wanted = int(seconds * native) + 1
        held, decoded = [], 0
        try:
            for frame in container.decode(stream):
                held += [piece.to_ndarray() for piece in as_float.resample(frame)]
                decoded += frame.samples
                if decoded >= wanted:
                    break
            held += [piece.to_ndarray() for piece in as_float.resample(None)]
        except av.error.FFmpegError as e:
            raise MediaError("corrupt", f"decode failed after {decoded} samples: {e}") from None
    if decoded == 0:
        raise MediaError("empty", "no audio samples decoded")
    clip = np.concatenate(held, axis=1)[:, :wanted]
    samples, _ = shape(clip, native, AudioPreset(sample_rate=rate, mono=True))
    return samples[0].astype(np.float32)


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

    transform = mel_transform(int(rate), params["n_fft"], params["hop_length"], params["n_mels"])
    mel = transform(torch.from_numpy(samples.mean(axis=0)))
    values = torch.log(mel + 1e-6).numpy().astype(np.float16)
    out = io.BytesIO()
    np.save(out, values)
    return out.getvalue(), {
        **params,
        "sample_rate": rate,
        "frames": int(values.shape[1]),
        "dtype": "float16",
        "log": "natural, of power + 1e-6",
    }


@functools.lru_cache(maxsize=8)
def mel_transform(rate: int, n_fft: int, hop_length: int, n_mels: int):
    """One torchaudio MelSpectrogram per setting and worker: building its filter bank cost more than
    applying it to a 10 s clip."""
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(sample_rate=rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)


def encode_flac(samples: np.ndarray, rate: int, layout: str | None = None) -> bytes:
    layout = layout or {1: "mono", 2: "stereo"}.get(samples.shape[0], f"{samples.shape[0]}c")
    out_buf = io.BytesIO()
    try:
        with av.open(out_buf, mode="w", format="flac") as out:
            stream = out.add_stream("flac", rate=rate, layout=layout)
            resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
            for start in range(0, samples.shape[1], 8192):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(samples[:, start : start + 8192]), format="fltp", layout=layout
                )
                frame.sample_rate = rate
                for piece in resampler.resample(frame):
                    out.mux(stream.encode(piece))
            for piece in resampler.resample(None):
                out.mux(stream.encode(piece))
            out.mux(stream.encode(None))
    except (av.error.FFmpegError, ValueError) as e:
        raise MediaError("unencodable", f"cannot write {samples.shape[0]} channels at {rate} Hz as FLAC: {e}") from None
    return out_buf.getvalue()


AS_FLOAT = {"s16": 1 / 32768, "s16p": 1 / 32768, "s32": 1 / 2**31, "s32p": 1 / 2**31, "flt": 1.0, "fltp": 1.0}


def mono_samples(data: bytes, rate: int, max_seconds: float) -> np.ndarray:
    """The first `max_seconds` of a sound (a clip, or a video's track) as mono float32 at `rate`: what
    dedupe compares two candidate copies on (tasks/similar/waveform.py). Raises MediaError."""
    with open_container(data) as container:
        if not container.streams.audio:
            raise MediaError("no_audio_stream", f"container {container.format.name} has no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks, held, limit = [], 0, int(max_seconds * rate)
        try:
            for frame in container.decode(container.streams.audio[0]):
                if frame.sample_rate == rate and frame.layout.name == "mono" and frame.format.name in AS_FLOAT:
                    # what clean publishes is often mono at this rate already: no resampler (a third of the time)
                    chunks.append(frame.to_ndarray().ravel() * np.float32(AS_FLOAT[frame.format.name]))
                    held += frame.samples
                else:
                    for piece in resampler.resample(frame):
                        chunks.append(piece.to_ndarray().ravel())
                        held += piece.samples
                if held >= limit:
                    break
            else:
                chunks += [piece.to_ndarray().ravel() for piece in resampler.resample(None)]
        except av.error.FFmpegError as e:
            raise MediaError("corrupt", f"decode failed: {e}") from None
    return np.concatenate(chunks)[:limit] if chunks else np.zeros(0, np.float32)
