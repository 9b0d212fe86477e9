"""Image downloads over http(s): img2dataset's opt-out rule, our address guard, a size cap, content
sniffed from the bytes, per-host limits and retries with backoff for transient failures only.

Why not img2dataset's `download_image` itself: it calls `urllib.request.urlopen` with a fresh default
opener, which follows redirects to any address (a URL list could reach 169.254.169.254), opens
`file://` and `ftp://` URLs and reads a body of any size. We keep its semantics (User-Agent token,
X-Robots-Tag directives) on an opener that allows only http(s) and checks the address of every
connection, redirects included.

Its opt-out rule is restated in `opted_out` rather than imported: importing `img2dataset.downloader`
imports all of img2dataset (wandb, webdataset, torch, OpenCV), 4 s and ~500 MB in every worker for
a dozen lines. tests/test_fetch.py checks the two agree, case by case.
"""

from __future__ import annotations

import functools
import http.client
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from . import FetchError
from .guard import AddressPolicy

USER_AGENT = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:72.0) Gecko/20100101 Firefox/72.0"
IMAGE_MAGIC = [
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
]


def opted_out(headers, user_agent_token: str | None, directives: set[str]) -> bool:
    """img2dataset's rule: an `X-Robots-Tag` value (`noai, noindex`, or `token: noai` for one crawler)
    names one of the directives, for every crawler or for ours."""
    for value in headers.get_all("X-Robots-Tag") or []:
        *token, named = value.split(":", 1)
        if (not token or token[0].lower() == user_agent_token) and any(
            d.strip().lower() in directives for d in named.split(",")
        ):
            return True
    return False


def sniff_image(data: bytes) -> str | None:
    """The image format from the first bytes, whatever the server's Content-Type says."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((ext for magic, ext in IMAGE_MAGIC if data.startswith(magic)), None)


def _guarded(base: type, policy: AddressPolicy):
    class Guarded(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._create_connection = lambda address, timeout, source=None: policy.connect(*address, timeout)

    return Guarded


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: AddressPolicy):
        super().__init__()
        self.connection = _guarded(http.client.HTTPConnection, policy)

    def http_open(self, req):
        return self.do_open(self.connection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: AddressPolicy):
        super().__init__(context=ssl.create_default_context())
        self.connection = _guarded(http.client.HTTPSConnection, policy)

    def https_open(self, req):
        return self.do_open(self.connection, req, context=self._context)


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    max_redirections = 5

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme not in ("http", "https"):
            raise FetchError("bad_url", f"redirected to a non-http(s) URL: {newurl[:200]}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def build_opener(policy: AddressPolicy) -> urllib.request.OpenerDirector:
    """http and https only (no file:, ftp:, data:, no proxies from the environment), every hop guarded."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        _HTTPHandler(policy),
        _HTTPSHandler(policy),
        _RedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


class HostLimiter:
    """At most `per_host` downloads in flight per host, and at most `rps` requests a second to it."""

    def __init__(self, per_host: int, rps: float = 0):
        self.per_host, self.interval = per_host, (1 / rps if rps else 0)
        self.lock = threading.Lock()
        self.slots: dict[str, threading.Semaphore] = {}
        self.next_start: dict[str, float] = {}

    def slot(self, host: str) -> threading.Semaphore:
        with self.lock:
            return self.slots.setdefault(host, threading.Semaphore(self.per_host))

    def wait_turn(self, host: str) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start.get(host, 0))
            self.next_start[host] = start + self.interval
        time.sleep(start - now)


class ImageDownloader:
    def __init__(
        self,
        policy: AddressPolicy,
        limiter: HostLimiter,
        timeout_s: float,
        retries: int,
        max_bytes: int,
        user_agent_token: str | None,
        disallowed_header_directives: tuple[str, ...],
    ):
        self.is_disallowed = functools.partial(
            opted_out,
            user_agent_token=user_agent_token and user_agent_token.strip().lower(),
            directives={d.strip().lower() for d in disallowed_header_directives},
        )
        self.check_opt_out = bool(disallowed_header_directives)
        self.opener, self.policy, self.limiter = build_opener(policy), policy, limiter
        self.timeout, self.retries, self.max_bytes = timeout_s, retries, max_bytes
        agent = USER_AGENT + (
            f" (compatible; {user_agent_token}; +https://github.com/mmetl)" if user_agent_token else ""
        )
        self.headers = {"User-Agent": agent}

    def fetch(self, url: str) -> tuple[bytes, str]:
        """(bytes, image extension); FetchError on failure, after retrying the transient ones."""
        host = urlsplit(url).hostname or ""
        for attempt in range(self.retries + 1):
            try:
                with self.limiter.slot(host):
                    self.limiter.wait_turn(host)
                    return self._fetch_once(url)
            except FetchError as e:
                if not e.transient or attempt == self.retries:
                    raise
            time.sleep(min(0.5 * 2**attempt, 8))
        raise AssertionError("unreachable")

    def _fetch_once(self, url: str) -> tuple[bytes, str]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError("bad_url", f"only http(s) URLs are fetched: {url[:200]}")
        request = urllib.request.Request(url, headers=self.headers)
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                if self.check_opt_out and self.is_disallowed(response.headers):
                    raise FetchError(
                        "opted_out", f"X-Robots-Tag: {', '.join(response.headers.get_all('X-Robots-Tag'))}"
                    )
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > self.max_bytes:
                    raise FetchError("too_large", f"Content-Length {length} is over {self.max_bytes} bytes")
                data = response.read(self.max_bytes + 1)
                content_type = response.headers.get("Content-Type", "?")
        except FetchError:
            raise
        except urllib.error.HTTPError as e:
            if 300 <= e.code < 400:  # urllib refuses a redirect to file:, ftp: ... before asking us
                raise FetchError("bad_url", f"redirect not followed: {e.reason}") from None
            transient = e.code == 429 or e.code >= 500
            raise FetchError(f"http_{e.code}", f"{e.code} {e.reason}", transient) from None
        except http.client.IncompleteRead as e:
            raise FetchError("truncated", f"the body ended after {len(e.partial)} bytes", True) from None
        except TimeoutError as e:
            raise FetchError("timeout", f"no answer in {self.timeout:g} s: {e}", True) from None
        except urllib.error.URLError as e:
            reason = e.reason
            if isinstance(reason, FetchError):
                raise reason from None
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise FetchError("timeout", f"no answer in {self.timeout:g} s", True) from None
            raise FetchError("connect", str(reason), True) from None
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise FetchError("connect", f"{type(e).__name__}: {e}", True) from None
        if len(data) > self.max_bytes:
            raise FetchError("too_large", f"over {self.max_bytes} bytes")
        if length and length.isdigit() and len(data) < int(length):  # urllib's read(n) does not raise for it
            raise FetchError("truncated", f"{len(data)} of the {length} bytes announced arrived", True)
        ext = sniff_image(data)
        if ext is None:
            raise FetchError("not_media", f"not an image (served as {content_type}, starts {data[:16]!r})")
        return data, ext
