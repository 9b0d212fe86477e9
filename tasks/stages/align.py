"""Align: every item pairs real media with real text that describes it, and a video's sound matches
its picture.

Rules as the filter's are (tasks/stages/rules.py): measure, then decide, so the dry run predicts them too.
With `align:` models, the score stage (tasks/stages/score.py) has put a cosine on every text; a text below its
modality's `min_score` is dropped (`align:low_score`), and an item left with no text is rejected for it.
"""

from __future__ import annotations

from pydantic import Field

from ..core.schema import CAPTION_KINDS
from ..core.settings import Strict
from .rules import Reviewed, Rule, RuleStage, TextRule
from .score import ScoringConfig


class AudioTrackRules(Strict):
    """A video's sound track: required, and how far its length may drift from the picture's."""

    require_video_audio: bool = True  # a video without an audio track is rejected
    max_av_drift_s: float = Field(0.25, ge=0)  # |video duration - audio track duration|


class AlignRules(AudioTrackRules, Reviewed):
    """What the align stage judges by (and the reviewers' verdicts)."""

    # modality -> the least align score a text of it keeps (align:low_score): each part's `min_score`
    min_scores: dict[str, float] = {}
    # generate.caption's `mode: replace_if_better`: a generated caption replaces the item's captions where it
    # scores above all of them, and goes where it does not
    replace_if_better: bool = False


class AlignConfig(AudioTrackRules, ScoringConfig):
    """The recipe's `align:`: the models that score texts against their media (tasks/stages/score.py), the
    least score each part keeps, and the sound-track rules."""

    # publish the models' media and text embeddings (float16) beside each split's index, by sample id
    keep_embeddings: bool = False

    def rules(self) -> AlignRules:
        """The align stage's settings: the sound-track rules and each scored modality's least score."""
        least = {m: part.min_score for m, part in self.parts().items() if part.min_score is not None}
        return AlignRules(
            require_video_audio=self.require_video_audio, max_av_drift_s=self.max_av_drift_s, min_scores=least
        )


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


class ReplaceIfBetter(TextRule):
    """One item's generated caption against the captions it came with, by align score: the better side stays
    (`align:replaced` for the captions it beats, `align:not_better` for a caption that beats it nowhere)."""

    def __init__(self, row: dict):
        scores = {"synthetic": [], "given": []}
        for text in row["texts"] or []:
            if text.get("align_score") is not None and (text["kind"] == "synthetic" or text["kind"] in CAPTION_KINDS):
                scores["synthetic" if text["kind"] == "synthetic" else "given"].append(text["align_score"])
        self.best = {side: max(found) for side, found in scores.items() if found}

    def measure(self, text):
        if len(self.best) < 2 or (text["kind"] != "synthetic" and text["kind"] not in CAPTION_KINDS):
            return None
        mine, other = ("synthetic", "given") if text["kind"] == "synthetic" else ("given", "synthetic")
        return mine, text["align_score"], self.best[other]

    def number(self, value):
        return None

    def decide(self, value):
        side, score, rival = value
        if side == "synthetic" and score <= rival:
            return "not_better", f"align_score={score:.4f} <= {rival:.4f}, the best given caption's"
        if side == "given" and rival > self.best["given"]:
            return "replaced", f"align_score={score:.4f}; the generated caption's {rival:.4f}"
        return None


class AlignStage(RuleStage):
    name = "align"
    Config = AlignRules
    reads = frozenset({"texts", "sha256", "duration_s", "audio_duration_s"})

    def __init__(self, config: AlignRules | None = None, /, **fields):
        super().__init__(config, **fields)
        self.item_rules = [
            HasMedia(),
            HasText(),
            AudioTrack(self.config.require_video_audio, self.config.max_av_drift_s),
        ]
        self.text_rules = [AlignScore(modality, least) for modality, least in self.config.min_scores.items()]

    def rules_for(self, row: dict) -> tuple[list[Rule], list[TextRule]]:
        if not self.config.replace_if_better:
            return self.item_rules, self.text_rules
        return self.item_rules, [*self.text_rules, ReplaceIfBetter(row)]
