"""Where a recording speaks: Silero VAD (the ONNX model inside the `silero-vad` wheel, run by ONNX Runtime).

The model gives each 32 ms of 16 kHz sound the probability that a voice speaks in it. The sequence
export of the model judges a whole recording in one call (each 512-sample chunk beside the 64 samples
before it), ~2 ms a second of sound on one core: 8x Silero's own PyTorch loop, with the same
probabilities. The probabilities become segments the way Silero's `get_speech_timestamps` makes them:
speech starts where a chunk reaches `THRESHOLD`, ends where the probability stays under it (less a
margin) for `MIN_SILENCE_S`; segments shorter than `MIN_SPEECH_S` are dropped (a click, a cough), each
is widened by `PAD_S`.

What clean records (clean.audio.voice_activity, clean.video.voice_activity): the `speech_ratio` score
(the share of the sound inside speech segments) and the segments, in seconds, in the item's features.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import mono_samples

RATE = 16_000  # what the model listens at
CHUNK = 512  # 32 ms: the model's step
CONTEXT = 64  # samples of the chunk before that the model sees with each chunk
THRESHOLD = 0.5  # Silero's defaults, which its authors tuned on many languages and noises
NEG_MARGIN = 0.15  # speech ends under THRESHOLD - NEG_MARGIN, so a wavering probability does not chop it
MIN_SPEECH_S = 0.25
MIN_SILENCE_S = 0.1
PAD_S = 0.03
MAX_SECONDS = 3600.0  # an hour: a longer recording is judged on its first hour


@dataclass(frozen=True)
class Speech:
    segments: list[tuple[float, float]]  # seconds from the start, in order, apart
    duration_s: float  # of the sound judged

    @property
    def ratio(self) -> float:
        spoken = sum(end - start for start, end in self.segments)
        return min(spoken / self.duration_s, 1.0) if self.duration_s > 0 else 0.0

    def shifted(self, by: float, duration_s: float) -> Speech:
        """The same speech in a cut of the recording that starts `by` seconds in and lasts `duration_s`."""
        inside = [(max(s - by, 0.0), min(e - by, duration_s)) for s, e in self.segments]
        return Speech([(s, e) for s, e in inside if e > s], duration_s)

    def features(self) -> list[list[float]]:
        """The segments as the item's features hold them: [[start, end], ...], milliseconds kept."""
        return [[round(s, 3), round(e, 3)] for s, e in self.segments]


@functools.cache
def _session():
    """The model, loaded once per process on one thread (a worker runs one item at a time; threads here
    would only contend with the other workers)."""
    import onnxruntime

    package = importlib.util.find_spec("silero_vad").submodule_search_locations[0]  # not imported: it loads torch
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    model = Path(package, "data", "silero_vad_16k_sequence.onnx")
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def speech_probabilities(samples: np.ndarray) -> np.ndarray:
    """The probability of speech in each 32 ms chunk of mono float32 samples at 16 kHz."""
    n = len(samples) // CHUNK
    if n == 0:
        return np.zeros(0, np.float32)
    chunks = np.asarray(samples[: n * CHUNK], np.float32).reshape(n, CHUNK)
    before = np.vstack([np.zeros((1, CONTEXT), np.float32), chunks[:-1, -CONTEXT:]])
    state = np.zeros((1, 1, 128), np.float32)
    probs, _, _ = _session().run(None, {"input": np.hstack([before, chunks]), "h": state, "c": state})
    return probs


def segments_of(probs: np.ndarray, duration_s: float) -> list[tuple[float, float]]:
    """Speech segments (seconds) from per-chunk probabilities, with Silero's hysteresis and bounds."""
    step = CHUNK / RATE
    found, start, quiet_since = [], None, None
    for i, p in enumerate(probs.tolist()):
        if p >= THRESHOLD:
            start = i * step if start is None else start
            quiet_since = None
        elif start is not None and p < THRESHOLD - NEG_MARGIN:
            quiet_since = i * step if quiet_since is None else quiet_since
            if i * step - quiet_since >= MIN_SILENCE_S:
                found.append((start, quiet_since))
                start, quiet_since = None, None
    if start is not None:
        found.append((start, quiet_since if quiet_since is not None else len(probs) * step))
    padded = [(max(s - PAD_S, 0.0), min(e + PAD_S, duration_s)) for s, e in found if e - s >= MIN_SPEECH_S]
    merged: list[tuple[float, float]] = []
    for s, e in padded:  # padding can make two segments touch: one then
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


def listen(data: bytes) -> Speech:
    """Where a recording (a clip, or a video's sound track) speaks. Raises MediaError for a file with no sound."""
    samples = mono_samples(data, RATE, MAX_SECONDS)
    duration = len(samples) / RATE
    return Speech(segments_of(speech_probabilities(samples), duration), duration)
