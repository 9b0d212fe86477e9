"""Align: every sample pairs real media with real text, and a video's sound matches its picture.

Today: presence checks and the audio/video duration check. Embedding-similarity scores (CLIP/CLAP)
and temporal clipping plug in here as further checks.
"""

from __future__ import annotations

from .schema import with_scores
from .stage import Reject, RowStage


class AlignStage(RowStage):
    name = "align"

    def __init__(self, require_video_audio: bool = True, max_av_drift_s: float = 0.25):
        super().__init__(require_video_audio=require_video_audio, max_av_drift_s=max_av_drift_s)
        self.require_video_audio = require_video_audio
        self.max_av_drift_s = max_av_drift_s

    def check(self, row: dict):
        if not row["sha256"]:  # media that clean never stored
            return Reject("missing_media")
        if not any((t["text"] or "").strip() for t in row["texts"] or []):
            return Reject("missing_text")
        if row["modality"] == "video":
            if row["audio_duration_s"] is None:
                if self.require_video_audio:
                    return Reject("no_audio_track")
            else:
                drift = abs(row["duration_s"] - row["audio_duration_s"])
                if drift > self.max_av_drift_s:
                    return Reject("av_drift", f"video {row['duration_s']:.3f}s, audio {row['audio_duration_s']:.3f}s")
                row = with_scores(row, av_drift_s=drift)
        return row
