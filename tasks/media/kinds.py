"""Media kinds: one small class per modality, registered in KINDS.

A kind knows its file extensions, how clean decodes and normalizes it (the columns of facts it fills),
and which of its signatures dedupe compares. To add a modality, write its class here, add it to KINDS,
and name it in tasks/schema.MODALITIES; filter rules name the modality they judge (tasks/stages/filter.py).
"""

from __future__ import annotations

import functools
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image as PILImage
from scipy.fft import next_fast_len

from ..core.schema import scores_dict
from ..core.settings import Strict
from ..similar import fingerprint_pairs, hamming_pairs, sequence_pairs
from ..similar.bits import sequence_distance
from ..similar.landmarks import landmark_pairs
from ..similar.search import CopySearch
from ..similar.signatures import Signatures
from ..similar.sounds import PRINT_BANDS, bit_error_rate, print_distance, short_sound_pairs
from ..similar.waveform import MAX_COMPARED_S, MAX_LAG_S, Sound, similarity, whole_correlation
from . import MediaError
from .audio import AudioCleanConfig, AudioPreset, decode_audio, mono_samples
from .fingerprint import PRINT_FLOOR_DB, PRINT_MAX_S
from .image import ImageCleanConfig, ImagePreset, as_published, decode_image
from .video import VideoCleanConfig, VideoPreset, decode_video

# (a, b, reject reason, what was measured): two items found to be one media
Pair = tuple[str, str, str, str]
# media bytes of items by key (tasks/core/stored_media.py): what a candidate pair is verified on
Fetch = Callable[[Iterable[str]], dict[str, bytes]]


class MediaKind(ABC):
    name: ClassVar[str]
    extensions: ClassVar[frozenset[str]]
    signatures: ClassVar[tuple[str, ...]] = ()  # the Sample columns `duplicate_pairs` compares
    # how clean publishes this kind: the recipe's `clean.<name>` (tasks/stages/clean.py)
    Settings: ClassVar[type[Strict] | None] = None
    # the recipe's `align:` part that scores this kind's texts against its media (tasks/stages/score.py)
    aligned_by: ClassVar[str | None] = None

    @abstractmethod
    def __init__(self, settings) -> None:
        """`settings`: clean's settings (tasks/clean.CleanSettings): the recipe's `clean:` and `features:`."""

    @abstractmethod
    def clean(self, data: bytes) -> dict:
        """Decode once; the item's normalized `media_bytes`, `media_ext`, facts, `_scores` and sidecars.
        Raises MediaError for media that cannot be used."""

    def measured(self, row: dict) -> dict | None:
        """The facts `clean` would return, when a decode earlier in this step already took them of exactly
        the row's bytes (a download's resize, tasks/fetch/resize.py) and the bytes are what clean would
        publish: clean then decodes nothing. None: decode."""
        return None

    @staticmethod
    def duplicate_pairs(items: Signatures, config: CopySearch) -> Iterator[Pair]:
        """Pairs of this kind's items (`items`: every item's signature columns) that are copies of one media:
        on evidence from the media itself (a video's pictures, not its sound)."""
        return iter(())

    @staticmethod
    def verified(
        candidates: list[Pair], fetch: Fetch | None, config: CopySearch, known: dict | None = None
    ) -> tuple[list[Pair], dict, dict]:
        """The candidates that are copies of one media, checked on the media itself where a signature alone
        could mistake two distinct ones for copies; a report of the check; and the score of each pair it
        measured ((a, b) -> score; `known`: scores measured before, not measured again). Here: all of them."""
        return candidates, {}, {}

    @staticmethod
    def related_pairs(items: Signatures, config: CopySearch) -> Iterator[Pair]:
        """Pairs that are not one media but share a part (a sound track): one group, neither rejected."""
        return iter(())

    @staticmethod
    def distance(a: dict, b: dict) -> float:
        """How far apart two copies are, 0 to 1, on the signature that links them (the keep policy's medoid)."""
        return 0.0 if a["sha256"] == b["sha256"] else 1.0

    @classmethod
    def mean_distances(cls, members: list[dict], fetch: Fetch | None = None) -> list[float]:
        """Each member's mean `distance` to the others (the medoid is the least); `fetch` gives the
        members' media where a kind ranks on something finer than its signature."""
        return [sum(cls.distance(m, o) for o in members if o is not m) / (len(members) - 1) for m in members]


def _signatures(items: Signatures, modality: str, column: str) -> tuple[list[str], list]:
    return items.of(modality, column)


def _json(value: dict) -> str:
    return json.dumps(value, sort_keys=True)


class Image(MediaKind):
    name = "image"
    Settings = ImageCleanConfig
    aligned_by = "image_text"
    extensions = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})
    signatures = ("phash",)

    def __init__(self, settings) -> None:
        image = settings.image
        resize = image.resize
        self.preset = ImagePreset(
            short_side=resize.short_side if resize else None,
            center_crop=resize.center_crop if resize else None,
            format=image.format,
            quality=image.quality,
            animated=image.animated,
        )
        self.max_pixels = settings.max_image_pixels

    def clean(self, data: bytes) -> dict:
        image = decode_image(data, self.max_pixels, self.preset)
        return _image_facts(image.data, image.ext, image.width, image.height, image.phash, image.pixel_std)

    def measured(self, row):
        # collect fills an image's phash only from its own decode of the bytes it returns (upright RGB)
        width, height = row["width"], row["height"]
        if row["phash"] is None or width * height > self.max_pixels:
            return None
        if not as_published(width, height, row["media_ext"], self.preset):
            return None
        return _image_facts(
            row["media_bytes"], row["media_ext"], width, height, row["phash"], scores_dict(row)["pixel_std"]
        )

    @staticmethod
    def duplicate_pairs(items, config):
        if config.image_radius is None:
            return
        ids, hashes = items.hex64("image", "phash")
        for a, b, d in hamming_pairs(ids, hashes, config.image_radius):
            yield a, b, "duplicate:near", f"pHash {d} bits"

    @staticmethod
    def distance(a, b):
        if not (a["phash"] and b["phash"]):
            return MediaKind.distance(a, b)
        return (int(a["phash"], 16) ^ int(b["phash"], 16)).bit_count() / 64

    @classmethod
    def mean_distances(cls, members, fetch=None):
        """On small grey thumbnails of the members, compared pixel by pixel, where their media are at hand:
        a 64-bit pHash puts an original and its brightened, captioned, PNG or WebP copies 0-2 bits apart,
        a tie that cannot tell which is the original; the pixels can (an original is one edit away from
        each copy, two copies are two edits apart). On the pHashes otherwise."""
        if fetch is not None and len(members) <= MAX_THUMBNAIL_CLUSTER:
            media = fetch(m["sample_id"] for m in members)
            thumbs = [thumbnail(media.get(m["sample_id"])) for m in members]
            if all(t is not None for t in thumbs):
                stack = np.stack(thumbs)
                apart = np.abs(stack[:, None] - stack[None]).mean(axis=(2, 3))
                means = apart.sum(axis=1) / (len(members) - 1)
                # within a grey level of the most central is as central: a lossless copy of the original
                # (a PNG of it) ties with it, and the criteria after the medoid decide
                return np.where(means <= means.min() + 1 / 255, means.min(), means).tolist()
        if not all(m["phash"] for m in members):
            return super().mean_distances(members)
        # bit by bit rather than pair by pair (a cluster of 5,000 copies is 25M pairs): a member's summed
        # distance counts, where it has a 1, the members with a 0, and where it has a 0, those with a 1
        hashes = np.array([int(m["phash"], 16) for m in members], np.uint64)
        bits = np.unpackbits(hashes.view(np.uint8).reshape(-1, 8), axis=1).astype(np.int64)
        ones = bits.sum(axis=0)
        summed = np.where(bits == 1, len(members) - ones, ones).sum(axis=1)
        return (summed / 64 / (len(members) - 1)).tolist()


THUMBNAIL_SIDE = 32
MAX_THUMBNAIL_CLUSTER = 256  # members: a larger cluster is ranked on its pHashes (its pairs grow as the square)


def thumbnail(data: bytes | None) -> np.ndarray | None:
    """A picture as a THUMBNAIL_SIDE square of grey levels 0-1 (its aspect ignored: copies share it)."""
    if data is None:
        return None
    try:
        with PILImage.open(io.BytesIO(data)) as picture:
            picture.draft("L", (THUMBNAIL_SIDE * 2, THUMBNAIL_SIDE * 2))  # a JPEG decodes at 1/8 scale and up
            small = picture.convert("L").resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), PILImage.Resampling.BOX)
            return np.asarray(small, np.float32) / 255
    except (OSError, ValueError, PILImage.DecompressionBombError):
        return None


def _image_facts(data: bytes, ext: str, width: int, height: int, phash: str, pixel_std: float) -> dict:
    """The columns clean fills for an image, and the score the filters judge it by (`_scores`)."""
    return {
        "media_bytes": data,
        "media_ext": ext,
        "width": width,
        "height": height,
        "phash": phash,
        "_scores": {"pixel_std": pixel_std},
    }


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
    extensions = frozenset({"flac", "wav", "mp3", "ogg", "opus", "m4a"})
    signatures = ("audio_fingerprint", "sound_landmarks", "sound_print", "duration_s")

    def __init__(self, settings) -> None:
        self.preset = audio_preset(settings)

    def clean(self, data: bytes) -> dict:
        audio = decode_audio(data, self.preset)
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
                sidecars=[{"name": "mel.npy", "data": audio.mel}], features=_json({"log_mel": audio.mel_params})
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
        ids, prints = _signatures(items, "audio", "audio_fingerprint")
        for a, b, ber in fingerprint_pairs(ids, prints, config.audio_max_ber):
            yield a, b, "duplicate:audio", f"Chromaprint bit error rate {ber:.3f}"
    ids, marks = _signatures(items, "audio", "sound_landmarks")
    if config.audio_min_landmarks is not None:
        yield from _landmark_candidates(items, ids, marks, config)
    if config.short_audio_max_db is not None:
        # what landmarks hold little of, also searched by the coarse print: sounds under LANDMARK_MIN_S (a
        # clipped copy of a 0.1 s click keeps none of its peaks), sounds with under FEW_LANDMARKS (a rumble
        # in one narrow band), and sounds published before landmarks were recorded
        count = dict(zip(ids, map(len, marks)))
        ids, durations = _signatures(items, "audio", "duration_s")
        only = {k for k, d in zip(ids, durations) if d < LANDMARK_MIN_S or count.get(k, 0) < FEW_LANDMARKS}
        if only:
            ids, prints = _signatures(items, "audio", "sound_print")
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


class Video(MediaKind):
    name = "video"
    Settings = VideoCleanConfig
    aligned_by = "video_text"
    extensions = frozenset({"mp4", "mov", "webm", "mkv", "avi"})
    signatures = ("keyframe_phashes", "audio_fingerprint")

    def __init__(self, settings) -> None:
        keyframes = settings.features.keyframes
        video = settings.video
        self.preset = VideoPreset(
            short_side=video.short_side,
            max_fps=video.max_fps,
            crf=video.crf,
            keyframes=keyframes.count if keyframes else 0,
            keyframe_side=keyframes.short_side if keyframes else VideoPreset.keyframe_side,
        )
        self.audio = audio_preset(settings)

    def clean(self, data: bytes) -> dict:
        video = decode_video(data, self.preset, self.audio)
        facts = {
            "media_bytes": video.data,
            "media_ext": video.ext,
            "width": video.width,
            "height": video.height,
            "fps": video.fps,
            "num_frames": video.num_frames,
            "duration_s": video.duration_s,
            "video_codec": video.video_codec,
            "audio_codec": video.audio_codec,
            "sample_rate": video.sample_rate,
            "audio_duration_s": video.audio_duration_s,
            "keyframe_phashes": video.keyframe_phashes,
            "audio_fingerprint": video.fingerprint,
            "_scores": video.scores,
        }
        sidecars = [{"name": f"keyframe{i}.jpg", "data": jpeg} for i, (_, jpeg) in enumerate(video.thumbnails)]
        features = {}
        if video.thumbnails:
            features["keyframes"] = {
                "count": len(video.thumbnails),
                "short_side": self.preset.keyframe_side,
                "times_s": [t for t, _ in video.thumbnails],
                "names": [s["name"] for s in sidecars],
            }
        if video.mel is not None:
            sidecars.append({"name": "mel.npy", "data": video.mel})
            features["log_mel"] = video.mel_params
        if video.source:
            features["reencoded_from"] = video.source
        if sidecars:
            facts["sidecars"] = sidecars
        if features:
            facts["features"] = _json(features)
        return facts

    @staticmethod
    def duplicate_pairs(items, config):
        if config.video_radius is None:
            return
        ids, sequences = _signatures(items, "video", "keyframe_phashes")
        for a, b, d in sequence_pairs(ids, [[int(h, 16) for h in s] for s in sequences], config.video_radius):
            yield a, b, "duplicate:video", f"keyframe pHash median {d:g} bits"

    @staticmethod
    def distance(a, b):
        if not (a["keyframe_phashes"] and b["keyframe_phashes"]):
            return MediaKind.distance(a, b)
        return (
            sequence_distance(*(np.array([int(h, 16) for h in x["keyframe_phashes"]], np.uint64) for x in (a, b))) / 64
        )

    @staticmethod
    def related_pairs(items, config):
        """Videos sharing a sound track (compared as sounds are): stock music, one intro, a dub over
        other pictures. Not one video, but they must not straddle splits."""
        if config.audio_max_ber is None:
            return
        ids, prints = _signatures(items, "video", "audio_fingerprint")
        for a, b, ber in fingerprint_pairs(ids, prints, config.audio_max_ber):
            yield a, b, "related:soundtrack", f"audio track bit error rate {ber:.3f}"


KINDS: dict[str, type[MediaKind]] = {kind.name: kind for kind in (Image, Audio, Video)}


SIGNATURE_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(c for kind in KINDS.values() for c in kind.signatures))


def modality_of(name: str) -> str | None:
    """The kind of a file by its extension, or None."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return next((kind.name for kind in KINDS.values() if ext in kind.extensions), None)
