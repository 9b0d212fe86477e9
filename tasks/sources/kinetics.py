"""Kinetics-400/600/700 (`train.csv`: label, youtube_id, time_start, time_end, split): each row is a
~10 s clip labelled with its action (a text of kind label); clips of one video stay in one split.
Clips under `media_root` as the common downloaders lay them out (`path`, default the official
release's `{split}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4`; `{label}` is there too, spaces
kept), else the window fetched from YouTube."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import YOUTUBE, Row, Source, caption, clip_key, seconds


class Kinetics(Source):
    kind: Literal["kinetics"]
    path: str = "{split}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"

    def rows(self) -> Iterator[Row]:
        for number, row in self.read_csv():
            ytid = row.get("youtube_id")
            start, end = seconds(row.get("time_start")), seconds(row.get("time_end"))
            texts = caption(row.get("label") or None, "label")  # a test split has no labels: text:empty
            if not ytid or start is None or end is None or end <= start:
                yield Row(number, texts=texts, error=f"{ytid or 'no youtube_id'}: bad window {start!r}-{end!r}")
                continue
            meta = {k: row[k] for k in ("split", "is_cc") if row.get(k)}
            if self.media_root:
                fields = {k: v for k, v in row.items() if isinstance(k, str)}
                try:
                    path = self.path.format(**{**fields, "time_start": int(start), "time_end": int(end)})
                except (KeyError, ValueError) as e:
                    yield Row(number, texts=texts, error=f"path {self.path!r} cannot be filled from this row: {e!r}")
                    continue
                yield Row(number, key=path, media=self.media_uri(path), modality="video", texts=texts, group=ytid,
                          meta=meta)  # fmt: skip
            else:
                yield Row(
                    number,
                    key=clip_key(ytid, start, end),
                    media=YOUTUBE.format(ytid),
                    modality="video",
                    texts=texts,
                    group=ytid,
                    clip=(start, end),
                    meta=meta,
                )
