"""Scenes: cut each long video (or every video) into one item per scene, before clean (`clean.video.scenes`).

A vlog, a lecture or a folder of raw footage arrives as whole videos; a training set wants shots. Each
scene (tasks/media/scenes.py) is cut out with the clip code (a stream copy from the keyframe at or before
the cut: encoders put one at most hard cuts) and becomes an item of its own: where its file begins and
ends in the video in `clip_start_s` / `clip_end_s`, `scene_index` and `scene_of` (the video's sample id),
the video's group (scenes of one video are never split apart), the subtitle cues said during it and the
video's own texts (flagged `scope:video`). Clean then decodes and measures each scene as any clip.

Items are made here, so the counts say so: the stage takes in videos, keeps or rejects each, and hands on
items (a kept video's scenes, or the video itself when it is not cut): in = kept + rejected, and the next
stage takes in what this one hands on.
"""

from __future__ import annotations

from ..core.schema import make_sample_id
from ..media import MediaError
from ..media.clip import cut_from
from ..media.scenes import ScenesConfig, find_scenes
from .stage import Reject, RowStage


class ScenesStage(RowStage):
    name = "scenes"
    Config = ScenesConfig
    derived_from = "scene_of"  # what it keeps are the scenes of the videos it takes in (tasks/build/engine.py)
    reads = frozenset({"media_bytes"})
    writes = frozenset({"media_bytes", "media_ext", "clip_start_s", "clip_end_s", "scene_index", "scene_of"})

    def check(self, row: dict):
        if row["modality"] != "video" or not row["media_bytes"]:
            return row
        try:
            scenes = find_scenes(row["media_bytes"], self.config)
        except MediaError as e:
            return Reject(f"decode:{e.code}", e.detail)
        length = scenes[-1][1] if scenes else 0.0
        if len(scenes) < 2 or (length <= self.config.max_scene_s and not self.config.every_video):
            return row
        return [self._scene(row, i, start, end) for i, (start, end) in enumerate(scenes)]

    def _scene(self, video: dict, i: int, start: float, end: float) -> dict:
        # a copy from the keyframe at or before the cut (encoders put one at most hard cuts): the window says
        # where the file really begins
        data, ext, begin = cut_from(video["media_bytes"], start, end)
        offset = video.get("clip_start_s") or 0.0  # a video that is itself a window of its source
        return {
            **video,
            "sample_id": make_sample_id(video["source"], f"{video['sample_id']}#scene={i}"),
            "media_bytes": data,
            "media_ext": ext,
            "media_size": len(data),
            "clip_start_s": offset + begin,
            "clip_end_s": offset + end,
            "scene_index": i,
            "scene_of": video["sample_id"],
            "texts": scene_texts(video["texts"] or [], begin, end),
        }


def scene_texts(texts: list[dict], start: float, end: float) -> list[dict]:
    """A scene's texts: the timed ones said during it (subtitle cues; their times from the scene's start), then
    the video's untimed ones (a title, a caption of the whole video) flagged `scope:video`."""
    during = [
        {**t, "start_s": max(t["start_s"] - start, 0.0), "end_s": min(t["end_s"], end) - start}
        for t in texts
        if t.get("start_s") is not None and t["end_s"] > start and t["start_s"] < end
    ]
    whole = [{**t, "flags": [*(t.get("flags") or []), "scope:video"]} for t in texts if t.get("start_s") is None]
    return during + whole
