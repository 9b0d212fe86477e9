"""MSR-VTT (`videodatainfo.json`): videos with their start/end in the source video and 20 sentences each.
Files `<video_id>.mp4` under `media_root`, or, without one, fetched from `url` with the window."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import Row, Source, SourceError, caption, clip_key, seconds


class MsrVtt(Source):
    kind: Literal["msrvtt"]
    extension: str = "mp4"

    def rows(self) -> Iterator[Row]:
        data = self.read_json()
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("videos"), list)
            or not isinstance(data.get("sentences"), list)
        ):
            raise SourceError(f"source {self.name}: {self.uri} has no 'videos' and 'sentences' lists (MSR-VTT)")
        videos = {
            v["video_id"]: v for v in data["videos"] if isinstance(v, dict) and isinstance(v.get("video_id"), str)
        }
        described = set()
        for number, sentence in enumerate(data["sentences"]):
            video = videos.get(sentence.get("video_id")) if isinstance(sentence, dict) else None
            if video is None:
                yield Row(
                    number,
                    texts=caption(sentence.get("caption")) if isinstance(sentence, dict) else [],
                    error=f"orphan sentence: video_id {_video_id(sentence)!r} is not in 'videos'",
                )
                continue
            described.add(video["video_id"])
            yield self._row(number, video, caption(sentence.get("caption")))
        for number, video in enumerate(data["videos"], start=len(data["sentences"])):
            if isinstance(video, dict) and video.get("video_id") in videos and video["video_id"] not in described:
                yield self._row(number, video, [])

    def _row(self, number: int, video: dict, texts: list[dict]) -> Row:
        meta = {k: video[k] for k in ("category", "split", "url") if video.get(k) is not None}
        if self.media_root or not video.get("url"):
            path = f"{video['video_id']}.{self.extension}"
            return Row(number, key=path, media=self.media_uri(path), modality="video", texts=texts, meta=meta)
        start, end = seconds(video.get("start time")), seconds(video.get("end time"))
        return Row(
            number,
            key=clip_key(video["video_id"], start, end),
            media=video["url"],
            modality="video",
            texts=texts,
            clip=(start, end) if start is not None and end is not None else None,
            meta=meta,
            group=video["url"],
        )


def _video_id(sentence):
    return sentence.get("video_id") if isinstance(sentence, dict) else sentence
