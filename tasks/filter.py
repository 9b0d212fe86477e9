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


class MinSide(Rule):
    score_name = "min_side"

    def __init__(self, modality: str, min_side: int):
        self.modality, self.min_side = modality, min_side

    def score(self, row):
        return float(min(row["width"], row["height"]))

    def verdict(self, value):
        return f"{self.modality}_too_small" if value < self.min_side else None


class MaxAspect(Rule):
    modality, score_name = "image", "aspect_ratio"

    def __init__(self, max_aspect: float):
        self.max_aspect = max_aspect

    def score(self, row):
        return max(row["width"], row["height"]) / max(min(row["width"], row["height"]), 1)

    def verdict(self, value):
        return "extreme_aspect" if value > self.max_aspect else None


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
        self.modality, self.score_name, self.low, self.high = modality, column, low, high
        self.too_low, self.too_high = too_low, too_high

    def score(self, row):
        return float(row[self.score_name]) if row.get(self.score_name) is not None else None

    def verdict(self, value):
        if value < self.low and self.too_low:
            return self.too_low
        if value > self.high and self.too_high:
            return self.too_high
        return None


class Measured(Within):
    """A score clean measured while decoding (blankness, silence, clipping): the pixels and samples are
    not decoded twice. Not measured (None): judged by nothing."""

    def score(self, row):
        return scores_dict(row).get(self.score_name)


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
        return (
            ("boilerplate", f"says nothing of the media: {text['text'][:60]!r}")
            if "boilerplate" in (text.get("flags") or [])
            else None
        )


class FilterStage(RowStage):
    name = "filter"

    def __init__(self, **thresholds):
        super().__init__(**thresholds)
        t = thresholds
        inf = float("inf")
        self.item_rules = [
            MinSide("image", t.get("min_image_side", 32)),
            MaxAspect(t.get("max_image_aspect", 4.0)),
            Measured("image", "pixel_std", t.get("min_image_std", 2.0), too_low="blank_image"),
            Within(
                "audio",
                "duration_s",
                t.get("min_audio_s", 0.5),
                t.get("max_audio_s", 60.0),
                "audio_too_short",
                "audio_too_long",
            ),
            Measured("audio", "silence_ratio", 0.0, t.get("max_silence_ratio", 0.9), too_high="mostly_silent"),
            Measured("audio", "clipping_ratio", 0.0, t.get("max_clipping_ratio", 0.01), too_high="clipped"),
            Within("audio", "sample_rate", t.get("min_sample_rate", 8000), inf, "low_sample_rate"),
            Within(
                "video",
                "duration_s",
                t.get("min_video_s", 0.5),
                t.get("max_video_s", 600.0),
                "video_too_short",
                "video_too_long",
            ),
            MinSide("video", t.get("min_video_side", 32)),
            Within(
                "video",
                "fps",
                t.get("min_video_fps", 1.0),
                t.get("max_video_fps", 240.0),
                "low_frame_rate",
                "high_frame_rate",
            ),
        ]
        self.license = License(tuple(t.get("licenses", ())), t.get("require_license", False))
        self.text_rules = [
            CaptionWords(t.get("min_caption_words", 2), t.get("max_caption_words", 200)),
            Language(tuple(t.get("languages", ())), t.get("language_min_score", 0.5)),
        ]
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
