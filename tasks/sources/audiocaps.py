"""AudioCaps CSV (audiocap_id, youtube_id, start_time, caption): a 10-second window of a YouTube video's
sound. Downloaded with yt-dlp, or read from `media_root` when `file` names the local files."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import YOUTUBE, Row, Source, caption, clip_key, seconds


class AudioCaps(Source):
    kind: Literal["audiocaps"]
    window_s: float = 10.0
    file: str | None = None  # local file name template, e.g. "{youtube_id}_{start_time}.wav"

    def rows(self) -> Iterator[Row]:
        for number, row in self.read_csv():
            start = seconds(row.get("start_time"))
            error = self.require_columns(row, "youtube_id") or (
                None if start is not None else f"start_time {row.get('start_time')!r} is not a time"
            )
            if error:
                yield Row(number, texts=caption(row.get("caption")), error=error)
                continue
            ytid = row["youtube_id"].strip()
            if self.file:  # already cut to the window
                path = self.file.format(youtube_id=ytid, start_time=row["start_time"].strip())
                yield Row(
                    number,
                    key=path,
                    media=self.media_uri(path),
                    modality="audio",
                    texts=caption(row.get("caption")),
                    group=ytid,
                )
            else:
                yield Row(
                    number,
                    key=clip_key(ytid, start, start + self.window_s),
                    media=YOUTUBE.format(ytid),
                    modality="audio",
                    texts=caption(row.get("caption")),
                    group=ytid,
                    clip=(start, start + self.window_s),
                    meta={"youtube_id": ytid},
                )
