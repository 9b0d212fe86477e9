"""Clean: clean and describe the texts, decode the media once, record its facts, normalize its encoding.

Texts are repaired, masked and described (tasks/media/text.py); empty and repeated ones are dropped one
by one; an item left with no text is rejected (`text:empty`).
"""

from __future__ import annotations

import hashlib
import json

from .media import MediaError
from .media.audio import AudioPreset, decode_audio
from .media.image import ImagePreset, decode_image
from .media.text import Tokenize, clean_texts, load_language_model
from .media.video import VideoPreset, decode_video
from .schema import with_scores
from .stage import Reject, RowStage


class CleanStage(RowStage):
    name = "clean"

    def __init__(
        self,
        image: dict | None = None,
        audio: dict | None = None,
        video: dict | None = None,
        features: dict | None = None,
        max_image_pixels: int = 64_000_000,
        pii: str = "mask",
    ):
        super().__init__(
            image=image, audio=audio, video=video, features=features, max_image_pixels=max_image_pixels, pii=pii
        )
        image = dict(image or {})
        resize = image.pop("resize", None) or {}
        self.image = ImagePreset(**image, **resize)
        features = features or {}
        mel = features.get("log_mel")
        self.audio = AudioPreset(**(audio or {}), log_mel=tuple(sorted(mel.items())) if mel else None)
        keyframes = features.get("keyframes") or {}
        self.video = VideoPreset(
            **(video or {}), keyframes=keyframes.get("count", 0), keyframe_side=keyframes.get("short_side", 224)
        )
        self.tokenize_settings = features.get("tokenize")
        self.tokenize = None
        self.max_image_pixels = max_image_pixels
        self.pii = pii

    def setup(self) -> None:
        load_language_model()  # ~100 MB, once per worker, not on the first item
        if self.tokenize_settings:
            self.tokenize = Tokenize(**self.tokenize_settings)

    def check(self, row: dict):
        texts, dropped = clean_texts(row["texts"] or [], self.pii)
        if not texts:  # checked first: no decode for an item that cannot be kept
            return Reject("text:empty", f"{len(dropped)} text(s), all empty: {[t['text'] for t, _ in dropped][:5]!r}")
        try:
            facts = getattr(self, f"_{row['modality']}")(row["media_bytes"])
        except MediaError as e:
            return Reject(f"decode:{e.code}", e.detail)
        except Exception as e:  # an input nobody foresaw must not fail the build: reject it, visibly
            return Reject("decode:unexpected", f"{type(e).__name__}: {e}")
        for text, reason in dropped:
            self.drop_text(row, text, reason)
        if self.tokenize is not None:
            texts = self.tokenize(texts)
        scores = facts.pop("_scores", {})  # measured while decoding; filters judge them
        return with_scores(
            {
                **row,
                **facts,
                "texts": texts,
                "media_size": len(facts["media_bytes"]),
                "sha256": hashlib.sha256(facts["media_bytes"]).hexdigest(),
            },
            **scores,
        )

    def _image(self, data: bytes) -> dict:
        image = decode_image(data, self.max_image_pixels, self.image)
        return {
            "media_bytes": image.data,
            "media_ext": image.ext,
            "width": image.width,
            "height": image.height,
            "phash": image.phash,
            "_scores": {"pixel_std": image.pixel_std},
        }

    def _audio(self, data: bytes) -> dict:
        audio = decode_audio(data, self.audio)
        facts = {
            "media_bytes": audio.data,
            "media_ext": audio.ext,
            "duration_s": audio.duration_s,
            "sample_rate": audio.sample_rate,
            "channels": audio.channels,
            "audio_codec": audio.codec,
            "audio_fingerprint": audio.fingerprint,
            "_scores": audio.scores,
        }
        if audio.mel is not None:
            facts.update(
                sidecars=[{"name": "mel.npy", "data": audio.mel}], features=_json({"log_mel": audio.mel_params})
            )
        return facts

    def _video(self, data: bytes) -> dict:
        video = decode_video(data, self.video, self.audio)
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
                "short_side": self.video.keyframe_side,
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


def _json(value: dict) -> str:
    return json.dumps(value, sort_keys=True)
