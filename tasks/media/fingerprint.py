"""Content fingerprints computed while a file decodes, for near-duplicate search (tasks/similar/).

- Sound: Chromaprint (the AcoustID fingerprint, via pyacoustid's binding to Debian's
  libchromaprint1): one 32-bit value per ~0.12 s of 11,025 Hz mono. A re-encode to MP3 or to FLAC at
  another rate keeps 98%+ of its bits, a 50 ms trim 91%+; distinct recordings share under 77%
  (measured on Debian's Asterisk speech prompts, tests/test_dedupe.py). Chromaprint needs about
  3 s of sound: a shorter clip has no fingerprint and is deduplicated by its bytes only.
- Pictures in motion: the pHash of one frame a second.
"""

from __future__ import annotations

import av
import imagehash
import numpy as np
from av.video.reformatter import VideoReformatter

try:
    import chromaprint
except ImportError as e:  # pyacoustid raises this when the C library is missing
    raise ImportError(
        f"{e}: install Chromaprint's library (Debian/Ubuntu: apt-get install libchromaprint1; "
        f"macOS: brew install chromaprint)"
    ) from None

FINGERPRINT_RATE = 11025  # Chromaprint's own analysis rate: feeding it this spares a second resampling


class SoundFingerprint:
    """Feed decoded frames (any format, rate, layout); `result()` is the raw Chromaprint fingerprint."""

    def __init__(self):
        self.resampler = av.AudioResampler(format="s16", layout="mono", rate=FINGERPRINT_RATE)
        self.printer = chromaprint.Fingerprinter()
        self.printer.start(FINGERPRINT_RATE, 1)

    def feed(self, frame: av.AudioFrame | None) -> None:
        for mono in self.resampler.resample(frame):
            self.printer.feed(mono.to_ndarray().tobytes())

    def result(self) -> list[int]:
        self.feed(None)
        raw, _ = chromaprint.decode_fingerprint(self.printer.finish())
        return [value & 0xFFFFFFFF for value in raw]  # the binding returns them signed


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
