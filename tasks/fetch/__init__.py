"""Getting an item's media: read from storage, downloaded over http(s), or through yt-dlp for video and
audio links. Every failure is a `FetchError` with a category that becomes the reject reason
(`fetch:<category>`) and says whether a retry could help."""

from __future__ import annotations


class FetchError(Exception):
    def __init__(self, category: str, detail: str, transient: bool = False):
        super().__init__(f"{category}: {detail}")
        self.category, self.detail, self.transient = category, detail, transient
