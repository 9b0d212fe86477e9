"""ActivityNet Captions (`train.json`, `val_1.json`: {"v_<youtube id>": {"duration", "timestamps": [[start,
end], ...], "sentences": [...]}}): each annotated window is a clip of its video with that sentence; all
clips of a video stay in one split. Videos `v_<youtube id>.<extension>` under `media_root` (as the
dataset's download scripts save them), else fetched from YouTube as windows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import YOUTUBE, Row, Source, SourceError, caption, windows


class ActivityNet(Source):
    kind: Literal["activitynet"]
    extension: str = "mp4"

    def rows(self) -> Iterator[Row]:
        data = self.read_json()
        if not isinstance(data, dict):
            raise SourceError(f"source {self.name}: {self.uri} is not an object of video ids (ActivityNet Captions)")
        number = 0
        for video_id, video in data.items():
            spans, sentences = (video.get(k) if isinstance(video, dict) else None for k in ("timestamps", "sentences"))
            if not isinstance(spans, list) or not isinstance(sentences, list) or len(spans) != len(sentences):
                yield Row(number, error=f"{video_id}: timestamps and sentences are not lists of one length")
                number += 1
                continue
            spans = [s if isinstance(s, list) and len(s) == 2 else (None, None) for s in spans]
            path = f"{video_id}.{self.extension}"
            media = self.media_uri(path) if self.media_root else YOUTUBE.format(video_id.removeprefix("v_"))
            meta = {"video_id": video_id, "duration": video.get("duration")}
            yield from windows(number, video_id, spans, [caption(s) for s in sentences], media, path, meta)
            number += len(spans)
