"""Filter: thresholds on what clean measured, one small rule class each (tasks/stages/rules.py).

Item rules judge the media (their measurements are kept in `scores` on every item that passes, so
thresholds can be re-tuned later without decoding anything again); the stage reports the first rule an
item fails. Text rules judge each text on its own.
"""

from __future__ import annotations

import json

from pydantic import Field, model_validator

from ..core.schema import scores_dict
from ..core.settings import Strict
from ..media.text import word_count
from .rules import Failure, Reviewed, Rule, RuleStage, TextRule


class FilterConfig(Strict):
    min_image_side: int = Field(32, ge=1)
    max_image_aspect: float = Field(4.0, ge=1.0)
    min_audio_s: float = Field(0.5, ge=0)
    max_audio_s: float = Field(60.0, gt=0)
    min_video_s: float = Field(0.5, ge=0)
    max_video_s: float = Field(600.0, gt=0)
    min_video_side: int = Field(32, ge=1)  # filter:video_too_small
    # frames per second by timestamps (filter:low_frame_rate, filter:high_frame_rate: broken clocks)
    min_video_fps: float = Field(1.0, ge=0)
    max_video_fps: float = Field(240.0, gt=0)
    min_caption_words: int = Field(2, ge=0)
    max_caption_words: int = Field(200, ge=1)
    # texts in other languages are dropped (filter:language) when the identifier is at least
    # `language_min_score` sure; empty: every language. Short captions score low and are kept.
    languages: tuple[str, ...] = ()
    language_min_score: float = Field(0.5, ge=0, le=1)
    drop_boilerplate: bool = True  # texts flagged boilerplate ("image may contain", a file name) go
    # the largest per-channel standard deviation of a 128-255 px copy below which an image is blank
    # (filter:blank_image): a flat frame, whatever its colour
    min_image_std: float = Field(2.0, ge=0)
    # audio, measured on the decoded samples: share of 20 ms windows under -50 dBFS (filter:mostly_silent),
    # share of samples at full scale (filter:clipped), and the published rate (filter:low_sample_rate)
    # items whose source states a license outside this list (LAION's LICENSE, COCO's licenses) are
    # rejects (filter:license); empty: any. require_license also rejects items that state none.
    licenses: tuple[str, ...] = ()
    require_license: bool = False
    # with align.heads: images whose aesthetic score is below (filter:aesthetic), or nsfw score above
    # (filter:nsfw); null: not judged. These rules run after the models have scored.
    min_aesthetic: float | None = None
    max_nsfw: float | None = None
    # videos whose picture moves less (filter:static_video: a slideshow, a title card, a still with sound) or
    # more (filter:too_much_motion) than this many frame widths a second (the `motion` score); null: not judged
    min_motion: float | None = Field(None, ge=0)
    max_motion: float | None = Field(None, gt=0)
    # recordings and videos whose share of speech (the `speech_ratio` score, clean's voice_activity) is below
    # (filter:too_little_speech: music or noise in a speech source) or above (filter:too_much_speech: talk in
    # a sound-event source); null: not judged. Usually set per source (a source's `filter:`)
    min_speech_ratio: float | None = Field(None, ge=0, le=1)
    max_speech_ratio: float | None = Field(None, ge=0, le=1)
    # pictures (and videos, over their keyframes) whose share covered by text (the `text_area` score, clean's
    # ocr) is above (filter:text_heavy: screenshots, slides, memes, posters); null: not judged
    max_text_area: float | None = Field(None, ge=0, le=1)
    # recordings and videos whose transcript (generate.transcript) reads this far from the one the source gave
    # (the `wer` score: word error rate, 0 same words, 1 none right) are mislabelled (filter:transcript_mismatch)
    max_wer: float | None = Field(None, ge=0)
    max_silence_ratio: float = Field(0.9, ge=0, le=1)
    max_clipping_ratio: float = Field(0.01, ge=0, le=1)
    min_sample_rate: int = Field(8000, ge=0)
    # documents (tasks/stages/documents.py), judged once their pictures are: pictures left (filter:few_images,
    # filter:many_images), words left (filter:short_document), and the share of pictures dropped
    # (filter:images_dropped); a document left with no picture is a document:no_images reject
    min_document_images: int = Field(1, ge=1)
    max_document_images: int = Field(30, ge=1)
    min_document_words: int = Field(10, ge=0)
    max_document_images_dropped: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _bounds(self):
        for lo, hi in (
            ("min_audio_s", "max_audio_s"),
            ("min_video_s", "max_video_s"),
            ("min_video_fps", "max_video_fps"),
            ("min_caption_words", "max_caption_words"),
            ("min_document_images", "max_document_images"),
            ("min_motion", "max_motion"),
            ("min_speech_ratio", "max_speech_ratio"),
        ):
            low, high = getattr(self, lo), getattr(self, hi)
            if low is not None and high is not None and low > high:
                raise ValueError(f"{lo} ({getattr(self, lo)}) is above {hi} ({getattr(self, hi)})")
        return self

    def for_source(self, overrides: dict) -> FilterConfig:
        """These thresholds with a source's own (its `filter:`), validated as the recipe's are."""
        return FilterConfig.model_validate({**self.model_dump(include=set(FilterConfig.model_fields)), **overrides})


class FilterSettings(FilterConfig, Reviewed):
    """The recipe's `filter:`, the sources that set thresholds of their own, and the reviewers' verdicts."""

    by_source: dict[str, dict] = {}


class MinSide(Rule):
    score = "min_side"

    def __init__(self, modality: str, min_side: int):
        self.modality, self.min_side = modality, min_side

    def measure(self, row):
        return float(min(row["width"], row["height"]))

    def decide(self, value):
        return (f"{self.modality}_too_small", f"min_side={value:g}") if value < self.min_side else None


class MaxAspect(Rule):
    modality, score = "image", "aspect_ratio"

    def __init__(self, max_aspect: float):
        self.max_aspect = max_aspect

    def measure(self, row):
        return max(row["width"], row["height"]) / max(min(row["width"], row["height"]), 1)

    def decide(self, value):
        return ("extreme_aspect", f"aspect_ratio={value:g}") if value > self.max_aspect else None


class Within(Rule):
    """A fact of the media (duration, frame rate, sample rate) inside [low, high]; a side without a
    reject code is not judged."""

    def __init__(
        self,
        modality: str,
        column: str,
        low: float,
        high: float = float("inf"),
        too_low: str | None = None,
        too_high: str | None = None,
    ):
        self.modality, self.score, self.low, self.high = modality, column, low, high
        self.too_low, self.too_high = too_low, too_high

    def measure(self, row):
        return float(row[self.score]) if row.get(self.score) is not None else None

    def decide(self, value):
        code = self.too_low if value < self.low else self.too_high if value > self.high else None
        return (code, f"{self.score}={value:g}") if code else None


class Measured(Within):
    """A score clean measured while decoding (blankness, silence, clipping): the pixels and samples are
    not decoded twice. Not measured (None): judged by nothing."""

    def measure(self, row):
        return scores_dict(row).get(self.score)


class License(Rule):
    """Items whose source names a license (LAION's LICENSE column, COCO's licenses, a video's license)
    outside the allowlist; items with none stated pass unless `require` is set. Compared lower-cased.
    Measures the stated license ("" for none)."""

    def __init__(self, allowed: tuple[str, ...], require: bool):
        self.allowed, self.require = {a.lower() for a in allowed}, require

    def measure(self, row):
        if not self.allowed:
            return None
        meta = json.loads(row["meta"]) if row.get("meta") else {}
        return next((str(v) for k, v in meta.items() if k.lower() == "license" and v not in (None, "")), "")

    def decide(self, stated):
        if not stated:
            return ("license", "no license stated") if self.require else None
        return None if stated.lower() in self.allowed else ("license", f"license {stated!r} is not allowed")


NOT_CAPTIONS = frozenset({"label", "region", "prompt", "passage", "ocr"})


class CaptionWords(TextRule):
    score = "caption_words"

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def measure(self, text):
        # a class label, a region's phrase, a prompt, a passage or text read in the picture is not a caption:
        # its length says nothing
        return None if text["kind"] in NOT_CAPTIONS else float(word_count(text["text"]))

    def decide(self, value):
        code = "caption_too_short" if value < self.low else "caption_too_long" if value > self.high else None
        return (code, f"caption_words={value:g}") if code else None


class Language(TextRule):
    """Drops a text the identifier is sure enough is in a language not allowed. Measures (lang, score)."""

    score = "lang_score"

    def __init__(self, allowed: tuple[str, ...], min_score: float):
        self.allowed, self.min_score = set(allowed), min_score

    def measure(self, text):
        return None if text.get("lang_score") is None else (text.get("lang"), float(text["lang_score"]))

    def number(self, value):
        return value[1]

    def decide(self, value) -> Failure | None:
        lang, p = value
        if not self.allowed or lang in self.allowed or p < self.min_score:
            return None
        return "language", f"lang={lang} p={p:.2f}, allowed: {', '.join(sorted(self.allowed))}"


class Boilerplate(TextRule):
    """Drops a text clean flagged as boilerplate."""

    def measure(self, text):
        return (text["text"] or "") if "boilerplate" in (text.get("flags") or []) else None

    def decide(self, flagged_text):
        return "boilerplate", f"says nothing of the media: {flagged_text[:60]!r}"


# bounds on scores measured only when asked (by clean, a model or a head): (key, kinds judged, score, reject code);
# a min_ key rejects below its bound, a max_ key above; null: not judged
MEASURED_BOUNDS = (
    ("min_motion", ("video",), "motion", "static_video"),
    ("max_motion", ("video",), "motion", "too_much_motion"),
    ("min_speech_ratio", ("audio", "video"), "speech_ratio", "too_little_speech"),
    ("max_speech_ratio", ("audio", "video"), "speech_ratio", "too_much_speech"),
    ("max_text_area", ("image", "video"), "text_area", "text_heavy"),
    ("max_wer", ("audio", "video"), "wer", "transcript_mismatch"),
    ("min_aesthetic", ("image",), "aesthetic", "aesthetic"),  # the align models' heads
    ("max_nsfw", ("image",), "nsfw", "nsfw"),
)


def filter_rules(c: FilterConfig) -> tuple[list[Rule], list[TextRule]]:
    """The filter's rules, in the order an item is judged (the first failure is its reject reason)."""
    inf = float("inf")
    item_rules = [
        MinSide("image", c.min_image_side),
        MaxAspect(c.max_image_aspect),
        Measured("image", "pixel_std", c.min_image_std, too_low="blank_image"),
        Within("audio", "duration_s", c.min_audio_s, c.max_audio_s, "audio_too_short", "audio_too_long"),
        Measured("audio", "silence_ratio", 0.0, c.max_silence_ratio, too_high="mostly_silent"),
        Measured("audio", "clipping_ratio", 0.0, c.max_clipping_ratio, too_high="clipped"),
        Within("audio", "sample_rate", c.min_sample_rate, inf, "low_sample_rate"),
        Within("video", "duration_s", c.min_video_s, c.max_video_s, "video_too_short", "video_too_long"),
        MinSide("video", c.min_video_side),
        Within("video", "fps", c.min_video_fps, c.max_video_fps, "low_frame_rate", "high_frame_rate"),
        License(c.licenses, c.require_license),
    ]
    for key, kinds, score, code in MEASURED_BOUNDS:
        if (bound := getattr(c, key)) is not None:
            low, high, codes = (
                (bound, inf, {"too_low": code}) if key.startswith("min_") else (-inf, bound, {"too_high": code})
            )
            item_rules += [Measured(kind, score, low, high, **codes) for kind in kinds]
    text_rules = [
        CaptionWords(c.min_caption_words, c.max_caption_words),
        Language(c.languages, c.language_min_score),
    ]
    if c.drop_boilerplate:
        text_rules.append(Boilerplate())
    return item_rules, text_rules


class FilterStage(RuleStage):
    name = "filter"
    Config = FilterSettings
    reads = frozenset({"texts", "scores", "width", "height", "duration_s"})

    def __init__(self, config: FilterSettings | None = None, /, **fields):
        super().__init__(config, **fields)
        base = FilterConfig.model_validate(self.config.model_dump(exclude={"by_source", "reviews"}))
        self.item_rules, self.text_rules = filter_rules(base)
        self.by_source = {name: filter_rules(base.for_source(o)) for name, o in self.config.by_source.items()}

    def rules_for(self, row: dict) -> tuple[list[Rule], list[TextRule]]:
        return self.by_source.get(row["source"]) or (self.item_rules, self.text_rules)
