"""Kinetics-400/600/700 (`train.csv`: label, youtube_id, time_start, time_end, split): each row is a
~10 s clip labelled with its action (a text of kind label); clips of one video stay in one split.
Clips under `media_root` as the common downloaders lay them out (`path`, default the official
release's `{split}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4`; `{label}` is there too, spaces
kept), else the window fetched from YouTube. With the default `path`, a clip is also found wherever its file
name lies under `media_root`: `{split}/{label}/<name>.mp4`, as torchvision's `Kinetics` and the ActivityNet
crawler lay them out, is found without setting `path`."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import Literal

from ..core import storage
from .base import YOUTUBE, Row, Source, caption, clip_key, seconds

OFFICIAL = "{split}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"


class Kinetics(Source):
    kind: Literal["kinetics"]
    path: str = OFFICIAL

    def rows(self) -> Iterator[Row]:
        on_disk = self._clips_by_name() if self.media_root and self.path == OFFICIAL else {}
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
                path = on_disk.get(posixpath.basename(path), path)
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

    def _clips_by_name(self) -> dict[str, str]:
        """Each `.mp4` under media_root by its file name (one listing): the path it really has."""
        return {posixpath.basename(p): p for p in storage.list_files(self.media_root) if p.endswith(".mp4")}
