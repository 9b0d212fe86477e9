"""WebVid (`results_*.csv`: videoid, contentUrl, duration, page_dir, name): one stock clip and its caption.
Files `<page_dir>/<videoid>.mp4` under `media_root` (the layout its downloader writes), else `contentUrl`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import Row, Source, caption


class WebVid(Source):
    kind: Literal["webvid"]

    def rows(self) -> Iterator[Row]:
        for number, row in self.read_csv():
            error = self.require_columns(row, "videoid", "page_dir" if self.media_root else "contentUrl")
            if error:
                yield Row(number, texts=caption(row.get("name")), error=error)
                continue
            path = f"{row['page_dir']}/{row['videoid']}.mp4" if self.media_root else row["contentUrl"]
            meta = {k: row[k] for k in ("duration", "page_dir") if row.get(k)}
            yield Row(
                number,
                key=row["videoid"],
                media=self.media_uri(path),
                modality="video",
                texts=caption(row.get("name")),
                meta=meta or None,
            )
