"""Content fingerprints computed while a file decodes, for near-duplicate search (tasks/similar/).

- Sound: Chromaprint (the AcoustID fingerprint, via pyacoustid's binding to Debian's
  libchromaprint1): one 32-bit value per ~0.12 s of 11,025 Hz mono. A re-encode to MP3 or to FLAC at
  another rate keeps 98%+ of its bits, a 50 ms trim 91%+; distinct recordings share under 77%
  (measured on Debian's Asterisk speech prompts, tests/test_dedupe.py). Chromaprint needs about
  3 s of sound: a shorter clip, or one that is mostly silence (a beep padded to 4 s), has no
  fingerprint and is deduplicated by its bytes only; values over silence are 0 and never compared.
- Sound, any length: the landmarks of its first 4 s (pairs of spectral peaks, tasks/media/landmarks.py),
  which find copies of short sounds and of a long sound's start.
- Pictures in motion: the pHash of one frame a second.
"""

from __future__ import annotations

import functools

import av
import imagehash
import numpy as np
from av.video.reformatter import VideoReformatter

from .landmarks import LANDMARK_MAX_S, LANDMARK_RATE, landmarks

try:
    import chromaprint
except ImportError as e:  # pyacoustid raises this when the C library is missing
    raise ImportError(
        f"{e}: install Chromaprint's library (Debian/Ubuntu: apt-get install libchromaprint1; "
        f"macOS: brew install chromaprint)"
    ) from None

FINGERPRINT_RATE = 11025  # Chromaprint's own analysis rate: feeding it this spares a second resampling
VALUE_HOP = 4096 // 3  # samples between two fingerprint values (Chromaprint's frame of 4096, 2/3 overlap)
VALUE_SPAN = 4096 + 15 * VALUE_HOP  # samples a value describes: its classifiers look at 16 frames (~2.2 s)
WINDOW = FINGERPRINT_RATE // 50  # 20 ms loudness windows
SILENT_DBFS = -50.0  # a window quieter than this is silence (as the audio scores count it)
SILENT_SHARE = 0.8  # a value whose frames are this much silence says nothing about the sound
MIN_AUDIBLE_VALUES = 4  # fewer values over sound (~0.5 s past Chromaprint's 2.6 s lead): bytes only


# A short clip's print (Chromaprint needs ~3 s): its log-mel spectrogram, coarse. 24 mel bands from 100 Hz
# to 4 kHz (what an 8 kHz recording still has), frames of 46 ms every 23 ms, in dB under the clip's
# loudest band (clipped at -60), silent frames at either end cut off (an encoder's padding, a trim).
PRINT_MAX_S = 4.0  # clips up to this long get a print
PRINT_FFT, PRINT_HOP, PRINT_BANDS, PRINT_FLOOR_DB = 512, 256, 24, -60
PRINT_MIN_FRAMES = 3  # fewer audible frames (~90 ms) and the clip is compared by its bytes only


@functools.cache
def _mel_bank() -> np.ndarray:
    def mel(hz):
        return 2595 * np.log10(1 + hz / 700)

    edges = 700 * (10 ** (np.linspace(mel(100), mel(4000), PRINT_BANDS + 2) / 2595) - 1)
    freqs = np.fft.rfftfreq(PRINT_FFT, 1 / FINGERPRINT_RATE)
    bank = [
        np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid))
        for lo, mid, hi in zip(edges, edges[1:], edges[2:])
    ]
    return np.clip(np.array(bank), 0, None).T


def sound_print(samples: np.ndarray) -> list[int]:
    """The print of mono samples at FINGERPRINT_RATE (floats in -1..1): frames x bands int8, flattened;
    empty when too little of it is sound."""
    x = np.pad(samples, (0, max(0, PRINT_FFT - len(samples))))
    frames = np.lib.stride_tricks.sliding_window_view(x, PRINT_FFT)[::PRINT_HOP] * np.hanning(PRINT_FFT)
    loud = 10 * np.log10((frames**2).mean(axis=1) + 1e-24) >= SILENT_DBFS
    audible = np.flatnonzero(loud)
    if len(audible) < PRINT_MIN_FRAMES:
        return []
    power = np.abs(np.fft.rfft(frames[audible[0] : audible[-1] + 1], axis=1)) ** 2 / PRINT_FFT
    db = 10 * np.log10(power @ _mel_bank() + 1e-12)
    return np.clip(np.round(db - db.max()), PRINT_FLOOR_DB, 0).astype(np.int8).ravel().tolist()


class SoundFingerprint:
    """Feed decoded frames (any format, rate, layout); `result()` is the raw Chromaprint fingerprint with
    the values that describe mostly silence set to 0 (silence matches any silence: it is no evidence),
    or empty when too few values describe sound to judge by."""

    def __init__(self):
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=FINGERPRINT_RATE)
        self.printer = chromaprint.Fingerprinter()
        self.printer.start(FINGERPRINT_RATE, 1)
        self.pending = np.zeros(0, np.float64)
        self.loud: list[np.ndarray] = []  # per 20 ms window: audible or not
        self.head: list[np.ndarray] = []  # the samples of a clip short enough for a print
        self.held = 0
        # the sound's start at the landmarks' rate (tasks/media/landmarks.py)
        self.to_landmark_rate = av.AudioResampler(format="flt", layout="mono", rate=LANDMARK_RATE)
        self.start: list[np.ndarray] = []
        self.start_held = 0

    def feed(self, frame: av.AudioFrame | None) -> None:
        if self.start_held < LANDMARK_MAX_S * LANDMARK_RATE or frame is None:
            for mono in self.to_landmark_rate.resample(frame):
                self.start.append(mono.to_ndarray().ravel())
                self.start_held += mono.samples
        for mono in self.resampler.resample(frame):
            samples = mono.to_ndarray().ravel()
            self.printer.feed(samples.tobytes())
            if self.held <= PRINT_MAX_S * FINGERPRINT_RATE:
                self.head.append(samples / 32768.0)
                self.held += len(samples)
            buffer = np.concatenate([self.pending, samples / 32768.0])
            whole = len(buffer) // WINDOW * WINDOW
            db = 10 * np.log10((buffer[:whole].reshape(-1, WINDOW) ** 2).mean(axis=1) + 1e-24)
            self.loud.append(db >= SILENT_DBFS)
            self.pending = buffer[whole:]

    def result(self) -> list[int]:
        self.feed(None)
        raw, _ = chromaprint.decode_fingerprint(self.printer.finish())
        values = np.array([value & 0xFFFFFFFF for value in raw], np.uint32)  # the binding returns them signed
        loud = np.concatenate(self.loud) if self.loud else np.zeros(0, bool)
        for i in range(len(values)):
            frames = loud[i * VALUE_HOP // WINDOW : (i * VALUE_HOP + VALUE_SPAN) // WINDOW]
            if len(frames) == 0 or (~frames).mean() >= SILENT_SHARE:
                values[i] = 0
        if np.count_nonzero(values) < MIN_AUDIBLE_VALUES:
            return []
        return values.tolist()

    def landmarks(self) -> list[int]:
        """The landmarks of the sound's first LANDMARK_MAX_S (call after `result`)."""
        return landmarks(np.concatenate(self.start)).tolist() if self.start else []

    def short_print(self) -> list[int]:
        """`sound_print` of the clip when it is at most PRINT_MAX_S long (call after `result`)."""
        if self.held > PRINT_MAX_S * FINGERPRINT_RATE or not self.head:
            return []
        return sound_print(np.concatenate(self.head))


class KeyframeHashes:
    """The pHash of the first frame at or after each whole second."""

    def __init__(self):
        self.hashes: list[str] = []
        self.next_s = 0.0
        # one converter for the clip: frame.to_image() sets up a new one each call (4x the cost)
        self.to_rgb = VideoReformatter()

    def feed(self, frame: av.VideoFrame, time_s: float) -> None:
        if time_s + 1e-6 >= self.next_s:
            self.hashes.append(str(imagehash.phash(self.to_rgb.reformat(frame, format="rgb24").to_image())))
            self.next_s = np.floor(time_s) + 1.0
