"""Filter: each rule measures a score into `scores`, then compares it with its threshold.

Scores are kept on every row that passes, so thresholds can be re-tuned later without decoding
anything again. One rule = one small class; the stage reports the first rule a row fails.
"""

from __future__ import annotations

from .media.text import word_count
from .stage import Reject, RowStage


class Rule:
    modality: str | None = None  # None: applies to every row
    score_name: str

    def score(self, row: dict) -> float: ...

    def verdict(self, value: float) -> str | None:
        """The reject code, or None to keep."""


class MinImageSide(Rule):
    modality, score_name = "image", "min_side"

    def __init__(self, min_side: int):
        self.min_side = min_side

    def score(self, row):
        return float(min(row["width"], row["height"]))

    def verdict(self, value):
        return "image_too_small" if value < self.min_side else None


class MaxAspect(Rule):
    modality, score_name = "image", "aspect_ratio"

    def __init__(self, max_aspect: float):
        self.max_aspect = max_aspect

    def score(self, row):
        return max(row["width"], row["height"]) / max(min(row["width"], row["height"]), 1)

    def verdict(self, value):
        return "extreme_aspect" if value > self.max_aspect else None


class Duration(Rule):
    score_name = "duration_s"

    def __init__(self, modality: str, low: float, high: float):
        self.modality, self.low, self.high = modality, low, high

    def score(self, row):
        return float(row["duration_s"])

    def verdict(self, value):
        if value < self.low:
            return f"{self.modality}_too_short"
        if value > self.high:
            return f"{self.modality}_too_long"
        return None


class CaptionWords(Rule):
    score_name = "caption_words"

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def score(self, row):
        return float(word_count(row["text"]))

    def verdict(self, value):
        if value < self.low:
            return "caption_too_short"
        if value > self.high:
            return "caption_too_long"
        return None


class FilterStage(RowStage):
    name = "filter"

    def __init__(self, **thresholds):
        super().__init__(**thresholds)
        t = thresholds
        self.rules = [
            MinImageSide(t.get("min_image_side", 32)),
            MaxAspect(t.get("max_image_aspect", 4.0)),
            Duration("audio", t.get("min_audio_s", 0.5), t.get("max_audio_s", 60.0)),
            Duration("video", t.get("min_video_s", 0.5), t.get("max_video_s", 600.0)),
            CaptionWords(t.get("min_caption_words", 2), t.get("max_caption_words", 200)),
        ]

    def check(self, row: dict):
        scores = dict(row["scores"] or [])
        for rule in self.rules:
            if rule.modality not in (None, row["modality"]):
                continue
            value = rule.score(row)
            scores[rule.score_name] = value
            code = rule.verdict(value)
            if code:
                return Reject(code, f"{rule.score_name}={value:g}")
        return {**row, "scores": scores}
