"""Filter: each rule measures a score, then compares it with its threshold.

Item rules score the media (kept in `scores` on every item that passes, so thresholds can be
re-tuned later without decoding anything again); the stage reports the first rule an item fails.
Text rules judge each text on its own: a failing caption is dropped from the item, and only an item
left with no text is rejected. One rule = one small class.
"""

from __future__ import annotations

import json

from .media.text import word_count
from .schema import scores_dict, with_scores
from .stage import Reject, RowStage


class Rule:
    modality: str | None = None  # None: applies to every row
    score_name: str

    def score(self, row: dict) -> float: ...

    def verdict(self, value: float) -> str | None:
        """The reject code, or None to keep."""

    def judge(self, text: dict) -> tuple[str, str] | None:
        """A text rule's (code, detail) for a text that fails, else None: by default its score and verdict."""
        value = self.score(text)
        code = self.verdict(value)
        return (code, f"{self.score_name}={value:g}") if code else None


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


class NotBlank(Rule):
    """Scored by clean while decoding (the pixels are not decoded twice)."""
    modality, score_name = "image", "pixel_std"

    def __init__(self, min_std: float):
        self.min_std = min_std

    def score(self, row):
        return scores_dict(row).get("pixel_std")  # None: not measured (judged by nothing)

    def verdict(self, value):
        return "blank_image" if value < self.min_std else None


class MeasuredAtMost(Rule):
    """A score clean measured while decoding (silence, clipping), judged against a ceiling."""

    def __init__(self, modality: str, score_name: str, ceiling: float, code: str):
        self.modality, self.score_name, self.ceiling, self.code = modality, score_name, ceiling, code

    def score(self, row):
        return scores_dict(row).get(self.score_name)  # None: not measured (judged by nothing)

    def verdict(self, value):
        return self.code if value > self.ceiling else None


class MinSampleRate(Rule):
    modality, score_name = "audio", "sample_rate"

    def __init__(self, low: int):
        self.low = low

    def score(self, row):
        return float(row["sample_rate"]) if row.get("sample_rate") else None

    def verdict(self, value):
        return "low_sample_rate" if value < self.low else None


class License(Rule):
    """Items whose source names a license (LAION's LICENSE column, COCO's licenses, a video's license)
    outside the allowlist; items with none stated pass unless `require` is set. Compared lower-cased."""

    score_name = "license"

    def __init__(self, allowed: tuple[str, ...], require: bool):
        self.allowed, self.require = {a.lower() for a in allowed}, require

    def judge_item(self, row) -> tuple[str, str] | None:
        if not self.allowed:
            return None
        meta = json.loads(row["meta"]) if row.get("meta") else {}
        stated = next((str(v) for k, v in meta.items() if k.lower() == "license" and v not in (None, "")), None)
        if stated is None:
            return ("license", "no license stated") if self.require else None
        return None if stated.lower() in self.allowed else ("license", f"license {stated!r} is not allowed")


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
    """A text rule: `score` takes one text {text, kind, source}."""

    score_name = "caption_words"

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def score(self, text):
        return float(word_count(text["text"]))

    def verdict(self, value):
        if value < self.low:
            return "caption_too_short"
        if value > self.high:
            return "caption_too_long"
        return None


class Language(Rule):
    """A text rule: drops a text the identifier is sure enough is in a language not allowed."""

    score_name = "lang_score"

    def __init__(self, allowed: tuple[str, ...], min_score: float):
        self.allowed, self.min_score = set(allowed), min_score

    def judge(self, text) -> tuple[str, str] | None:
        if not self.allowed or text.get("lang") in self.allowed or (text.get("lang_score") or 0) < self.min_score:
            return None
        return "language", f"lang={text['lang']} p={text['lang_score']:.2f}, allowed: {', '.join(sorted(self.allowed))}"


class Boilerplate(Rule):
    """A text rule: drops a text clean flagged as boilerplate."""

    def judge(self, text) -> tuple[str, str] | None:
        return ("boilerplate", f"says nothing of the media: {text['text'][:60]!r}") if "boilerplate" in (text.get("flags") or []) else None


class FilterStage(RowStage):
    name = "filter"

    def __init__(self, **thresholds):
        super().__init__(**thresholds)
        t = thresholds
        self.item_rules = [
            MinImageSide(t.get("min_image_side", 32)),
            MaxAspect(t.get("max_image_aspect", 4.0)),
            NotBlank(t.get("min_image_std", 2.0)),
            Duration("audio", t.get("min_audio_s", 0.5), t.get("max_audio_s", 60.0)),
            MeasuredAtMost("audio", "silence_ratio", t.get("max_silence_ratio", 0.9), "mostly_silent"),
            MeasuredAtMost("audio", "clipping_ratio", t.get("max_clipping_ratio", 0.01), "clipped"),
            MinSampleRate(t.get("min_sample_rate", 8000)),
            Duration("video", t.get("min_video_s", 0.5), t.get("max_video_s", 600.0)),
        ]
        self.license = License(tuple(t.get("licenses", ())), t.get("require_license", False))
        self.text_rules = [CaptionWords(t.get("min_caption_words", 2), t.get("max_caption_words", 200)),
                           Language(tuple(t.get("languages", ())), t.get("language_min_score", 0.5))]
        if t.get("drop_boilerplate", True):
            self.text_rules.append(Boilerplate())

    def check(self, row: dict):
        scores = {}
        for rule in self.item_rules:
            if rule.modality not in (None, row["modality"]):
                continue
            value = rule.score(row)
            if value is None:
                continue
            scores[rule.score_name] = value
            code = rule.verdict(value)
            if code:
                return Reject(code, f"{rule.score_name}={value:g}")
        failure = self.license.judge_item(row)
        if failure:
            return Reject(*failure)
        texts, failed = [], []
        for text in row["texts"] or []:
            failure = self.text_failure(text)
            if failure:
                failed.append((text, failure))
            else:
                texts.append(text)
        if not texts:
            code, detail = failed[0][1] if failed else ("no_text", "no texts")
            return Reject(code, f"all {len(failed)} text(s) fail; the first: {detail}")
        for text, (code, detail) in failed:
            self.drop_text(row, text, code, detail)
        return {**with_scores(row, **scores), "texts": texts}

    def text_failure(self, text: dict) -> tuple[str, str] | None:
        for rule in self.text_rules:
            failure = rule.judge(text)
            if failure:
                return failure
        return None
