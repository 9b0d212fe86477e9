"""Recordings: decoded and normalized once; found again by Chromaprint, landmarks and a coarse print, each
candidate confirmed on the waveforms."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
from scipy.fft import next_fast_len

from ...similar import fingerprint_pairs
from ...similar.landmarks import landmark_pairs
from ...similar.search import CopySearch
from ...similar.signatures import Signatures
from ...similar.sounds import PRINT_BANDS, bit_error_rate, print_distance, short_sound_pairs
from ...similar.waveform import MAX_COMPARED_S, MAX_LAG_S, Sound, similarity, whole_correlation
from .. import MediaError
from ..audio import AudioCleanConfig, AudioPreset, decode_audio, mono_samples
from ..clip import cut
from ..fingerprint import PRINT_FLOOR_DB, PRINT_MAX_S
from ..speech import listen
from .base import Fetch, MediaKind, Pair, features_json


def audio_preset(settings) -> AudioPreset:
    mel = settings.features.log_mel
    return AudioPreset(
        sample_rate=settings.audio.sample_rate,
        mono=settings.audio.mono,
        log_mel=tuple(sorted(mel.model_dump().items())) if mel else None,
    )


class Audio(MediaKind):
    name = "audio"
    Settings = AudioCleanConfig
    aligned_by = "audio_text"
    card_tasks = ("text-to-audio",)
    member_facts = ("duration_s", "sample_rate", "channels", "audio_codec")
    extensions = frozenset({"flac", "wav", "mp3", "ogg", "opus", "m4a"})
    signatures = ("audio_fingerprint", "sound_landmarks", "sound_print", "duration_s")

    def __init__(self, settings) -> None:
        self.preset = audio_preset(settings)
        self.voice_activity, self.trim_to_speech = settings.audio.voice_activity, settings.audio.trim_to_speech

    def facts(self, row: dict) -> dict:
        facts = super().facts(row)
        if (trimmed := facts.pop("_trimmed", None)) is not None:  # the window of the source it now is
            offset = row.get("clip_start_s") or 0.0
            facts.update(clip_start_s=offset + trimmed[0], clip_end_s=offset + trimmed[1])
        return facts

    def clean(self, data: bytes) -> dict:
        audio = decode_audio(data, self.preset)
        speech = listen(audio.data) if self.voice_activity else None
        trimmed = None
        if self.trim_to_speech and speech.segments:
            trimmed = (speech.segments[0][0], speech.segments[-1][1])
            if trimmed != (0.0, speech.duration_s):  # the cut is a WAV: the source's codec is still the one to name
                audio = replace(decode_audio(cut(audio.data, *trimmed)[0], self.preset), codec=audio.codec)
                speech = speech.shifted(trimmed[0], audio.duration_s)
        facts = self._facts(audio)
        if speech is not None:
            facts["_scores"] = {**audio.scores, "speech_ratio": speech.ratio}
            features = json.loads(facts.get("features") or "{}")
            facts["features"] = features_json({**features, "speech": speech.features()})
        return facts if trimmed is None else {**facts, "_trimmed": trimmed}

    def _facts(self, audio) -> dict:
        facts = {
            "media_bytes": audio.data,
            "media_ext": audio.ext,
            "duration_s": audio.duration_s,
            "sample_rate": audio.sample_rate,
            "channels": audio.channels,
            "audio_codec": audio.codec,
            "audio_fingerprint": audio.fingerprint,
            "sound_print": audio.sound_print,
            "sound_landmarks": audio.landmarks,
            "_scores": audio.scores,
        }
        if audio.mel is not None:
            facts.update(
                sidecars=[{"name": "mel.npy", "data": audio.mel}], features=features_json({"log_mel": audio.mel_params})
            )
        return facts

    @staticmethod
    def duplicate_pairs(items, config):
        seen = set()  # a pair two signatures propose is verified once
        for a, b, reason, measured in _sound_candidates(items, config):
            if (a, b) not in seen:
                seen.add((a, b))
                yield a, b, reason, measured

    @staticmethod
    def verified(candidates, fetch, config, known=None):
        """Every candidate, whichever print found it, checked on the waveforms: a print says two sounds
        look alike, only the signal says they are one recording."""
        check = SoundCheck(fetch or (lambda keys: {}), config.audio_min_similarity)
        confirmed = check.check(candidates, known)
        return confirmed, check.report(len(candidates)), check.measured

    @staticmethod
    def distance(a, b):
        if a["audio_fingerprint"] and b["audio_fingerprint"]:
            return bit_error_rate(*(np.array(x["audio_fingerprint"], np.uint32) for x in (a, b)))
        if a.get("sound_print") and b.get("sound_print"):
            shaped = (np.array(x["sound_print"], np.float32).reshape(-1, PRINT_BANDS) for x in (a, b))
            return print_distance(*shaped) / -PRINT_FLOOR_DB
        return MediaKind.distance(a, b)


def _sound_candidates(items: Signatures, config: CopySearch) -> Iterator[Pair]:
    """Pairs of sounds that a signature says may be one recording (each is then verified on the waveform)."""
    if config.audio_max_ber is not None:
        ids, prints = items.of("audio", "audio_fingerprint")
        for a, b, ber in fingerprint_pairs(ids, prints, config.audio_max_ber):
            yield a, b, "duplicate:audio", f"Chromaprint bit error rate {ber:.3f}"
    ids, marks = items.of("audio", "sound_landmarks")
    if config.audio_min_landmarks is not None:
        yield from _landmark_candidates(items, ids, marks, config)
    if config.short_audio_max_db is not None:
        # what landmarks hold little of, also searched by the coarse print: sounds under LANDMARK_MIN_S (a
        # clipped copy of a 0.1 s click keeps none of its peaks), sounds with under FEW_LANDMARKS (a rumble
        # in one narrow band), and sounds published before landmarks were recorded
        count = dict(zip(ids, map(len, marks)))
        ids, durations = items.of("audio", "duration_s")
        only = {k for k, d in zip(ids, durations) if d < LANDMARK_MIN_S or count.get(k, 0) < FEW_LANDMARKS}
        if only:
            ids, prints = items.of("audio", "sound_print")
            for a, b, db in short_sound_pairs(ids, prints, config.short_audio_max_db, only):
                yield a, b, "duplicate:audio", f"short-sound print {db:.1f} dB apart"


def _landmark_candidates(items: Signatures, ids: list[str], marks: list, config: CopySearch) -> Iterator[Pair]:
    """Sounds sharing `audio_min_landmarks` landmarks at one alignment. Two short sounds (both with a print)
    must also have prints within `short_audio_max_db`: one synthetic voice's words share landmarks (its
    noise for an "s", its vowels), and their prints tell them apart at no cost, where the waveform check
    costs ms a pair; every copy we made passed both."""
    pairs = landmark_pairs(ids, marks, config.audio_min_landmarks)
    rows = items.rows({x for a, b, _ in pairs for x in (a, b)}, ["sound_print"]) if pairs else {}
    for a, b, common in pairs:
        prints = [rows.get(x, {}).get("sound_print") for x in (a, b)]
        if config.short_audio_max_db is None or not all(prints):
            yield a, b, "duplicate:audio", f"{common} landmarks in common"
            continue
        apart = print_distance(*(np.array(p, np.float32).reshape(-1, PRINT_BANDS) for p in prints))
        if apart <= config.short_audio_max_db:
            yield a, b, "duplicate:audio", f"{common} landmarks in common, short-sound print {apart:.1f} dB apart"


LANDMARK_MIN_S = 0.3  # sounds shorter than this, or with fewer landmarks, are also searched by their print
FEW_LANDMARKS = 20

VERIFY_RATE = 16_000  # sounds are decoded for verification at this rate, and compared here or at half of it
VERIFY_CHUNK = 2_000  # candidate pairs whose media are fetched at once
HIGH_SHARE = 0.2  # of its energy above 4 kHz: a sound that holds this much is compared at 16 kHz
LOW_SHARE = 0.3  # of its energy under 1 kHz: two sounds that hold this much get a first look at 2 kHz
COARSE_FLOOR = 0.5  # that look's whole correlation under this: not one recording (copies measured 0.9+)
# two short sounds (a print's) differ in length by at most this, or a fifth of the longer: trims of 50 ms at
# either end and a codec's priming and padding
SHORT_LENGTH_SLACK_S = 0.25


class SoundCheck:
    """Candidate copies of one recording, compared on their waveforms (tasks/similar/waveform.py). Each
    sound is decoded once, at 16 kHz mono; two sounds are compared at 16 kHz when both hold a fifth of
    their energy above 4 kHz (noise, cymbals, birdsong), else at 8 kHz (speech, and any 8 kHz copy):
    each pair on the band both still hold, where codecs are most faithful."""

    def __init__(self, fetch: Fetch, threshold: float):
        self.fetch, self.threshold = fetch, threshold
        self.scores: list[float] = []  # of confirmed pairs
        self.refuted: list[float] = []
        self.unverified = 0

    def check(self, candidates: list[Pair], known: dict[tuple[str, str], float] | None = None) -> list[Pair]:
        """The candidates verified to be one recording. `known`: similarities measured already (by dedupe,
        for the leakage guard), not measured again."""
        known = known or {}
        self.measured: dict[tuple[str, str], float] = {}
        confirmed = []
        for start in range(0, len(candidates), VERIFY_CHUNK):
            chunk = candidates[start : start + VERIFY_CHUNK]
            media = self.fetch({x for a, b, *_ in chunk if (a, b) not in known for x in (a, b)})
            sound = functools.lru_cache(maxsize=512)(lambda key, media=media: _sound(media.get(key)))
            for a, b, reason, measured in chunk:
                score = known[(a, b)] if (a, b) in known else _compare(sound(a), sound(b))
                if score is None:  # no media to check on (an item published before media was kept there)
                    self.unverified += 1
                    confirmed.append((a, b, reason, f"{measured}; not verified: no media at hand"))
                    continue
                self.measured[(a, b)] = score
                if score >= self.threshold:
                    self.scores.append(score)
                    confirmed.append((a, b, reason, f"{measured}; waveform similarity {score:.3f}"))
                else:
                    self.refuted.append(score)
        return confirmed

    def report(self, candidates: int) -> dict:
        return {
            "candidates": candidates,
            "confirmed": len(self.scores) + self.unverified,
            "refuted": len(self.refuted),
            "unverified": self.unverified,
            "confirmed_similarity": [round(min(self.scores), 3), round(max(self.scores), 3)] if self.scores else None,
            "refuted_similarity": [round(min(self.refuted), 3), round(max(self.refuted), 3)] if self.refuted else None,
        }


@dataclass
class _Heard:
    """A sound as the check compares it: at 16 kHz, at 8 kHz, at 2 kHz (a first, cheap look), and where its
    energy lies."""

    full: Sound
    half: Sound
    coarse: Sound
    high: bool  # HIGH_SHARE of its energy above 4 kHz
    low: bool  # LOW_SHARE of its energy under 1 kHz: the 2 kHz look sees it


def _sound(data: bytes | None) -> _Heard | None:
    if data is None:
        return None
    try:
        samples = mono_samples(data, VERIFY_RATE, MAX_COMPARED_S + MAX_LAG_S).astype(np.float64)
    except MediaError:
        return None
    # one transform, at a length FFT is fast at (a prime length is 10-100x slower) that 8 divides: the
    # lower rates are its spectrum cut at their Nyquist frequency (exact band-limiting)
    size = 8 * next_fast_len(-(-max(len(samples), 16) // 8), real=True)
    spectrum = np.fft.rfft(samples, size)
    power = np.abs(spectrum) ** 2
    total = max(power.sum(), 1e-30)

    def at(factor: int) -> np.ndarray:
        return np.fft.irfft(spectrum[: size // (2 * factor) + 1], size // factor)[: len(samples) // factor] / factor

    return _Heard(
        full=Sound(samples, VERIFY_RATE),
        half=Sound(at(2), VERIFY_RATE // 2),
        coarse=Sound(at(8), VERIFY_RATE // 8),
        high=bool(power[len(power) // 2 :].sum() >= HIGH_SHARE * total),
        low=bool(power[: len(power) // 8].sum() >= LOW_SHARE * total),
    )


def _compare(a: _Heard | None, b: _Heard | None) -> float | None:
    if a is None or b is None:
        return None
    shorter, longer = sorted((len(a.full), len(b.full)))
    if longer <= PRINT_MAX_S * VERIFY_RATE and longer - shorter > max(SHORT_LENGTH_SLACK_S * VERIFY_RATE, 0.2 * longer):
        return 0.0  # two short sounds this far apart in length are not one recording trimmed or padded
    if a.low and b.low:  # a first look at 2 kHz, an eighth of the work: copies correlate there as a whole
        whole = whole_correlation(a.coarse, b.coarse, VERIFY_RATE // 8)
        if whole < COARSE_FLOOR:
            return whole
    if a.high and b.high:
        return similarity(a.full, b.full, VERIFY_RATE)
    return similarity(a.half, b.half, VERIFY_RATE // 2)
