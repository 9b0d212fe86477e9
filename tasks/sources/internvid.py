"""InternVid (`InternVid-10M-FLT.jsonl`: YoutubeID, Start_timestamp and End_timestamp as HH:MM:SS.mmm,
Caption, and its scores): each line is a window of a YouTube video with its caption; windows of one
video stay in one split. The video `<YoutubeID>.<extension>` under `media_root` cut to the window,
else the window fetched from YouTube."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import YOUTUBE, Row, Source, caption, windows


def timestamp(value) -> float | None:
    """Seconds from "HH:MM:SS.mmm" (or a number), None when it is neither."""
    if isinstance(value, int | float):
        return float(value)
    try:
        parts = [float(p) for p in str(value).split(":")]
    except ValueError:
        return None
    return sum(p * 60**i for i, p in enumerate(reversed(parts))) if 1 <= len(parts) <= 3 else None


class InternVid(Source):
    kind: Literal["internvid"]
    extension: str = "mp4"

    def rows(self) -> Iterator[Row]:
        for number, record, error in self.read_records():
            ytid = record.get("YoutubeID") if record else None
            if error or not isinstance(ytid, str) or not ytid:
                yield Row(number, error=error or "record without a YoutubeID")
                continue
            span = (timestamp(record.get("Start_timestamp")), timestamp(record.get("End_timestamp")))
            path = f"{ytid}.{self.extension}"
            media = self.media_uri(path) if self.media_root else YOUTUBE.format(ytid)
            meta = {k: v for k, v in record.items() if k.endswith("_Score")}
            yield from windows(number, ytid, [span], [caption(record.get("Caption"))], media, path, meta or None)
