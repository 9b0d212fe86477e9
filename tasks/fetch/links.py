"""Video and audio links through yt-dlp's Python API: YouTube ids, pages that embed a video, direct files.

What a download may do comes from the recipe only (format selection, size cap, subtitle languages);
nothing from a URL, a title or an annotation becomes a yt-dlp option or a path: each download goes
to a fresh temporary folder under a fixed name. The page's host, and each media URL yt-dlp picks,
must pass the address guard before any byte is downloaded (a redirect inside yt-dlp's own download is
not re-checked: the guard on image downloads covers redirects, this one only the URLs yt-dlp reports).
"""

from __future__ import annotations

import glob
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field

import av

from ..media.subtitles import timed_texts
from . import FetchError
from .guard import AddressPolicy


@dataclass
class Downloaded:
    data: bytes
    ext: str
    cut: bool  # already cut to the requested window
    meta: dict = field(default_factory=dict)
    subtitles: list[dict] = field(default_factory=list)  # texts of kind subtitle


class _QuietLogger:
    def debug(self, msg):
        pass

    info = warning = debug

    def error(self, msg):
        pass


class LinkDownloader:
    def __init__(
        self,
        policy: AddressPolicy,
        timeout_s: float,
        retries: int,
        max_bytes: int,
        video_format: str,
        audio_format: str,
        subtitles: tuple[str, ...],
    ):
        self.policy, self.timeout, self.retries, self.max_bytes = policy, timeout_s, retries, max_bytes
        self.ffmpeg = shutil.which("ffmpeg") is not None
        # without FFmpeg yt-dlp can neither merge separate video and audio formats nor cut sections

        def single(spec: str) -> str:
            return spec if self.ffmpeg else "/".join(p for p in spec.split("/") if "+" not in p) or "b"

        self.formats = {"video": single(video_format), "audio": single(audio_format)}
        self.subtitles = subtitles

    def fetch(self, url: str, modality: str, window: tuple[float, float] | None) -> Downloaded:
        got = self._fetch(url, modality, window, cut=bool(window) and self.ffmpeg)
        if got.cut and not _decodes(got.data):
            # FFmpeg seeks by HTTP range requests; a server without them leaves it a header and no
            # frames (and yt-dlp says nothing): take the whole file, the caller cuts it
            got = self._fetch(url, modality, window, cut=False)
        return got

    def _fetch(self, url: str, modality: str, window: tuple[float, float] | None, cut: bool) -> Downloaded:
        import yt_dlp
        from yt_dlp.utils import DownloadError, download_range_func

        self.policy.check_url(url)
        with tempfile.TemporaryDirectory(prefix="mmetl-link-") as folder:
            params = self._params(modality, folder)
            if cut:
                params["download_ranges"] = download_range_func(None, [window])
                params["force_keyframes_at_cuts"] = False
            try:
                with yt_dlp.YoutubeDL(params) as ydl:
                    info = ydl.extract_info(url, download=False)
                    for fmt in info.get("requested_formats") or [info]:
                        if fmt.get("url"):
                            self.policy.check_url(fmt["url"])
                    info = ydl.process_ie_result(info, download=True)
            except DownloadError as e:
                raise _categorize(str(e)) from None
            media = [p for p in glob.glob(os.path.join(folder, "item.*")) if not p.endswith((".vtt", ".part", ".ytdl"))]
            if not media:
                raise FetchError(
                    "too_large" if info.get("filesize", 0) and info["filesize"] > self.max_bytes else "not_media",
                    f"yt-dlp saved no media file for {url[:200]}",
                )
            path = max(media, key=os.path.getsize)
            with open(path, "rb") as f:
                data = f.read()
            subs = _subtitles(folder, window)
        meta = {
            k: info.get(k)
            for k in ("title", "duration", "uploader", "license", "webpage_url", "extractor")
            if info.get(k) is not None
        }
        if info.get("title"):
            subs.insert(0, {"text": info["title"], "kind": "title"})
        return Downloaded(data, path.rsplit(".", 1)[-1].lower(), cut, meta, subs)

    def _params(self, modality: str, folder: str) -> dict:
        """yt-dlp's options: one item into `folder`, quiet, bounded, with subtitles when asked for."""
        return {
            "format": self.formats[modality],
            "paths": {"home": folder, "temp": folder},
            "outtmpl": {"default": "item.%(ext)s", "subtitle": "item.%(ext)s"},
            "noplaylist": True,
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "logger": _QuietLogger(),
            "max_filesize": self.max_bytes,
            "socket_timeout": self.timeout,
            "retries": self.retries,
            "writesubtitles": bool(self.subtitles),
            "writeautomaticsub": bool(self.subtitles),
            "subtitleslangs": list(self.subtitles),
            "subtitlesformat": "vtt/best",
            "overwrites": True,
            "cachedir": False,
            "color": "no_color",
        }


def _decodes(data: bytes) -> bool:
    """Whether the file yields at least one decoded frame."""
    try:
        with av.open(io.BytesIO(data)) as container:
            return next(iter(container.decode(*container.streams)), None) is not None
    except (av.error.FFmpegError, ValueError, StopIteration):
        return False


def _categorize(message: str) -> FetchError:
    text = message.lower()
    for needle, category, transient in (
        ("http error 404", "http_404", False),
        ("http error 403", "http_403", False),
        ("http error 429", "http_429", True),
        ("http error 5", "http_5xx", True),
        ("timed out", "timeout", True),
        ("name or service not known", "dns", False),
        ("unsupported url", "not_media", False),
        ("no video formats", "not_media", False),
        ("connection refused", "connect", True),
    ):
        if needle in text:
            return FetchError(category, message[:500], transient)
    return FetchError("link", message[:500])


def _subtitles(folder: str, window: tuple[float, float] | None) -> list[dict]:
    """The subtitles yt-dlp saved beside the item, as timed texts (the cues within `window` when the item is cut;
    clean joins them into one text per file)."""
    subs = []
    for sub in sorted(glob.glob(os.path.join(folder, "item.*.vtt"))):
        with open(sub, encoding="utf-8", errors="replace") as f:
            subs += timed_texts(f.read(), "subtitle", window)
    return subs
