"""How near two items' signatures must be for them to be one media: what each media kind's search
(tasks/media/kinds/) reads. The recipe's `dedupe:` holds them (tasks/stages/dedupe/), and the leakage
guard widens them (tasks/publish/leakage.py)."""

from __future__ import annotations

from pydantic import Field

from ..core.settings import Strict


class CopySearch(Strict):
    # pHash bits two images may differ by and still be one picture; null turns near-duplicates off.
    # Measured on real photos: re-encodes, half-size copies, PNG/WebP 0 bits, +20% brightness up to 6,
    # a 2% border crop up to 8; distinct photographs 20 and more apart.
    image_radius: int | None = Field(8, ge=0, le=16)
    # Chromaprint bit error rate at which two sounds are one recording; null: off. Measured on real
    # speech: MP3 and 16 kHz FLAC re-encodes up to 0.03, 50 ms trims up to 0.09, distinct 0.24 and more.
    audio_max_ber: float | None = Field(0.15, gt=0, lt=0.5)
    # landmarks (pairs of spectral peaks in a sound's first 4 s) two sounds share at one alignment to be
    # candidates; null: off. Measured on copies of words, noises and syllables (MP3 64 kbit/s, AAC, Opus,
    # 8 kHz, +-6 dB, 50 ms trims of sounds of 0.3 s and more): 7 and more in common. Two clips of up to 4 s
    # must also have prints within `short_audio_max_db`
    audio_min_landmarks: int | None = Field(5, ge=2)
    # clips up to 4 s have a coarse log-mel print: the mean dB difference at which two are candidates. Clips
    # under 0.3 s, with under 20 landmarks, or published before landmarks were recorded are also searched
    # by it; null: off
    short_audio_max_db: float | None = Field(4.0, gt=0, le=20)
    # Every signature match above is only a candidate: two sounds are one recording when their waveforms,
    # lined up at the best lag, correlate at least this well in every audible 40 ms window
    # (tasks/similar/waveform.py). Measured: MP3 64-320 kbit/s, AAC, Opus, 8-48 kHz, +-6 dB and 50 ms
    # trims 0.87 and more; distinct words, voices and noises 0.22 and less.
    audio_min_similarity: float = Field(0.6, gt=0, le=1)
    # median pHash distance of a video's keyframes (one a second) to another's; null: off. (Sound
    # tracks that match as sounds do only put two videos in one group.)
    video_radius: int | None = Field(8, ge=0, le=16)
