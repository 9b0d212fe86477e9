"""HowTo100M: `caption.json` ({video_id: {"start": [...], "end": [...], "text": [...]}}, the videos' ASR
subtitles). Each subtitle is a clip of its video with that text (kind subtitle); all clips of a video
stay in one split. Videos `<video_id>.<extension>` under `media_root`, else fetched from YouTube."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import YOUTUBE, Row, Source, SourceError, caption, windows


class HowTo100M(Source):
    kind: Literal["howto100m"]
    extension: str = "mp4"

    def rows(self) -> Iterator[Row]:
        data = self.read_json()
        if not isinstance(data, dict):
            raise SourceError(f"source {self.name}: {self.uri} is not an object of video ids (HowTo100M caption.json)")
        number = 0
        for video_id, subs in data.items():
            starts, ends, texts = (subs.get(k) if isinstance(subs, dict) else None for k in ("start", "end", "text"))
            if not all(isinstance(x, list) for x in (starts, ends, texts)) or not len(starts) == len(ends) == len(
                texts
            ):
                yield Row(number, error=f"{video_id}: start, end and text are not lists of one length")
                number += 1
                continue
            path = f"{video_id}.{self.extension}"
            media = self.media_uri(path) if self.media_root else YOUTUBE.format(video_id)
            said = [caption(text, "subtitle") for text in texts]
            yield from windows(number, video_id, zip(starts, ends), said, media, path, {"video_id": video_id})
            number += len(texts)
