"""Align: every item pairs real media with real text that describes it, and a video's sound matches
its picture.

Rules as the filter's are (tasks/stages/rules.py): measure, then decide, so the dry run predicts them too.
With `align:` models, the score stage (tasks/stages/score.py) has put a cosine on every text; a text below its
modality's `min_score` is dropped (`align:low_score`), and an item left with no text is rejected for it.
"""

from __future__ import annotations

from ..recipe import AlignConfig
from .rules import Rule, RuleStage, TextRule


class HasMedia(Rule):
    def measure(self, row):
        return bool(row["sha256"])  # media that clean never stored has no digest

    def decide(self, present):
        return None if present else ("missing_media", None)


class HasText(Rule):
    def measure(self, row):
        if row.get("part_of"):  # a picture of a document: the document's passages are its text
            return None
        return any((t["text"] or "").strip() for t in row["texts"] or [])

    def decide(self, present):
        return None if present else ("missing_text", None)


class AudioTrack(Rule):
    """A video's sound track: required unless `required` is off; its length within `max_drift_s` of the
    picture's. Measures (drift, video seconds, audio seconds); the drift is stored as `av_drift_s`."""

    modality, score = "video", "av_drift_s"

    def __init__(self, required: bool, max_drift_s: float):
        self.required, self.max_drift_s = required, max_drift_s

    def measure(self, row):
        if row["audio_duration_s"] is None:
            return "no audio" if self.required else None
        return abs(row["duration_s"] - row["audio_duration_s"]), row["duration_s"], row["audio_duration_s"]

    def number(self, value):
        return None if value == "no audio" else value[0]

    def decide(self, value):
        if value == "no audio":
            return "no_audio_track", None
        drift, video_s, audio_s = value
        return ("av_drift", f"video {video_s:.3f}s, audio {audio_s:.3f}s") if drift > self.max_drift_s else None


class AlignScore(TextRule):
    """A text whose embedding is too far from its media's (CLIP, CLAP cosine below `min_score`)."""

    score = "align_score"

    def __init__(self, modality: str, min_score: float):
        self.modality, self.min_score = modality, min_score

    def measure(self, text):
        return text.get("align_score")

    def decide(self, value):
        return ("low_score", f"align_score={value:.4f} < {self.min_score:g}") if value < self.min_score else None


class AlignStage(RuleStage):
    name = "align"
    Config = AlignConfig
    reads = frozenset({"texts", "sha256", "duration_s", "audio_duration_s"})

    def __init__(self, config: AlignConfig | None = None, /, **fields):
        super().__init__(config, **fields)
        self.item_rules = [
            HasMedia(),
            HasText(),
            AudioTrack(self.config.require_video_audio, self.config.max_av_drift_s),
        ]
        c = self.config
        parts = {"image": c.image_text, "video": c.video_text, "audio": c.audio_text}
        self.text_rules = [
            AlignScore(modality, part.min_score)
            for modality, part in parts.items()
            if part is not None and part.min_score is not None
        ]
