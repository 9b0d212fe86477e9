"""Videos: decoded once (re-encoded where the preset asks), found again by their keyframes' pHashes; a shared
sound track groups two videos without merging them."""

from __future__ import annotations

import numpy as np

from ...similar import fingerprint_pairs, sequence_pairs
from ...similar.bits import sequence_distance
from ..ocr import read_frames
from ..speech import listen
from ..video import VideoCleanConfig, VideoPreset, decode_video
from .audio import audio_preset
from .base import MediaKind, features_json, with_reading


class Video(MediaKind):
    name = "video"
    Settings = VideoCleanConfig
    aligned_by = "video_text"
    card_tasks = ("text-to-video",)
    member_facts = ("width", "height", "duration_s", "fps", "num_frames", "video_codec", "audio_codec",
                    "audio_duration_s", "sample_rate", "channels")  # fmt: skip
    member_lineage = ("scene_index", "scene_of")  # a scene cut out of a video (clean.video.scenes)
    extensions = frozenset({"mp4", "mov", "webm", "mkv", "avi"})
    signatures = ("keyframe_phashes", "audio_fingerprint")

    def __init__(self, settings) -> None:
        keyframes = settings.features.keyframes
        video = settings.video
        self.preset = VideoPreset(
            short_side=video.short_side,
            max_fps=video.max_fps,
            crf=video.crf,
            motion=video.motion,
            keyframes=keyframes.count if keyframes else 0,
            keyframe_side=keyframes.short_side if keyframes else VideoPreset.keyframe_side,
        )
        self.audio = audio_preset(settings)
        self.voice_activity = video.voice_activity
        self.ocr = video.ocr

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
        if self.voice_activity and video.audio_codec is not None:
            speech = listen(video.data)
            facts["_scores"] = {**video.scores, "speech_ratio": speech.ratio}
            features["speech"] = speech.features()
        if self.ocr != "off":
            facts = with_reading(facts, read_frames([jpeg for _, jpeg in video.thumbnails], self.ocr), self.ocr)
        if sidecars:
            facts["sidecars"] = sidecars
        if features:
            facts["features"] = features_json(features)
        return facts

    @staticmethod
    def duplicate_pairs(items, config):
        if config.video_radius is None:
            return
        ids, sequences = items.of("video", "keyframe_phashes")
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
        ids, prints = items.of("video", "audio_fingerprint")
        for a, b, ber in fingerprint_pairs(ids, prints, config.audio_max_ber):
            yield a, b, "related:soundtrack", f"audio track bit error rate {ber:.3f}"
