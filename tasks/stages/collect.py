"""Collect: turn the sources' annotation files into work shards of items, then fetch each item's media.

Two phases. `plan_collect` reads every source once through its adapter (tasks/sources), gathers the
rows that name one media file (or one time window of it) into one item with all their texts, and
writes shards of items that reference their media (no bytes yet); broken rows become
`collect:bad_row` rejects. Then `CollectStage` runs per shard and reads or downloads each item's media
(tasks/fetch).
"""

from __future__ import annotations

import glob
import hashlib
import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ByteSize, Field, model_validator

from ..core import storage
from ..core.committed import Record, committed
from ..core.schema import REJECT_SCHEMA, make_sample_id, table_of, with_scores
from ..core.settings import Strict
from ..core.shards import ShardConfig, cut_shards
from ..fetch import FetchError
from ..fetch.cache import fetch_cache
from ..fetch.guard import AddressPolicy
from ..fetch.http import HostLimiter, ImageDownloader
from ..fetch.links import LinkDownloader
from ..fetch.resize import ImageResizer
from ..media import MediaError
from ..media.clip import cut
from ..media.image import crop
from ..media.kinds import KINDS
from ..media.subtitles import SUFFIXES as SUBTITLE_SUFFIXES
from ..media.subtitles import timed_texts
from ..sources import Row, Source
from ..sources.manifest import utf8_ok
from .blocklist import Blocklist, BlocklistSettings
from .plan_rows import RowLog, as_samples, gather_items, group_names
from .stage import Reject, RowStage, StageOutput


class DownloadResizeConfig(Strict):
    """Downloaded images resized as they arrive, with img2dataset's options (`image_size: 256,
    resize_mode: keep_ratio` is img2dataset's default), so a URL list is never stored at full size;
    in the one decode that also measures them for clean (tasks/fetch/resize.py)."""

    image_size: int = Field(256, ge=8, le=16384)
    resize_mode: Literal["keep_ratio", "keep_ratio_largest", "center_crop", "border"] = "keep_ratio"
    resize_only_if_bigger: bool = True
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    encode_quality: int = Field(95, ge=0, le=100)  # for png: the compression level, 0-9

    @model_validator(mode="after")
    def _png_level(self):
        if self.encode_format == "png" and self.encode_quality > 9:
            raise ValueError("for png, encode_quality is the compression level, 0 to 9")
        return self


class NetworkConfig(Strict):
    """How media is downloaded from http(s) URLs (URL lists, video links)."""

    # hosts (names or addresses, CIDR ranges allowed) that may be fetched although they resolve to a
    # private, loopback or link-local address; every other such address is refused, after redirects too
    allow_hosts: tuple[str, ...] = ()
    timeout_s: float = Field(20.0, gt=0)
    retries: int = Field(2, ge=0, le=10)  # transient failures only (timeouts, 429, 5xx), with backoff
    max_bytes: ByteSize = Field(ByteSize(64 * 2**20), gt=0)  # per image download; larger is too_large
    max_video_bytes: ByteSize = Field(ByteSize(2 * 2**30), gt=0)  # per video or audio download
    threads: int = Field(16, ge=1, le=256)  # downloads in flight per worker
    per_host: int = Field(4, ge=1)  # downloads in flight per host, per worker
    per_host_rps: float = Field(0, ge=0)  # requests per second per host and worker; 0: unlimited
    user_agent_token: str | None = "mmetl"
    # X-Robots-Tag directives that opt an image out, as img2dataset honours them; [] to ignore them
    disallowed_header_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    video_format: str = "bv*[height<=480]+ba/b[height<=480]/bv*+ba/b"  # yt-dlp format selection, video
    audio_format: str = "ba/b"  # yt-dlp format selection, audio-only items
    subtitles: tuple[str, ...] = ("en",)  # subtitle languages saved as texts of kind subtitle
    resize: DownloadResizeConfig | None = None  # downloaded images kept as they came unless set


@dataclass(frozen=True)
class CollectPlan(Record):
    """The plan's work shards, its rejects (broken annotation rows), and its counts."""

    shards: list[str]
    rejects_uri: str
    n_rows: int  # annotation rows read
    n_rows_kept: int
    n_rejected: int
    n_items: int  # items the kept rows make
    reasons: dict[str, int]


@committed(lambda out_dir, **_: storage.join(out_dir, "_plan.json"), CollectPlan)
def plan_collect(
    sources: list[Source], partition: str, run_id: str, shards: ShardConfig, workers: int, out_dir: str
) -> CollectPlan:
    """Group annotation rows into items, cut them into shards and write those; broken rows become rejects.

    Every row that names the same media file of a source joins one item, as one more text. Rows are
    gathered into Arrow batches as they are read and grouped in Arrow (tasks/stages/plan_rows.py), not a dict
    per item: a 10M-row URL list plans in 3.7 GB (bench/driver.py).
    """
    log = RowLog()
    bad: list[tuple[int, dict]] = []  # (reading order, reject)
    for source in sources:
        for row in source.rows():
            if row.error:
                bad.append((log.n_read, _bad_row(source.name, row, partition, run_id)))
                log.skip()
            else:
                segments = _segments(source.name, row) if row.segments is not None else None
                log.add(source.name, row, segments, _meta_json(row.meta))
    items, contradicting = gather_items(log.table())
    for ordinal, source, row in contradicting:
        bad.append((ordinal, _bad_row(source, row, partition, run_id)))
    bad = [reject for _, reject in sorted(bad, key=lambda b: b[0])]
    items = items.append_column("group_id", group_names(items))
    media = items.column("source_uri")  # sizes are listed for files; a URL's is known once downloaded
    local = media.filter(pc.invert(pc.match_substring_regex(pc.fill_null(media, "http://"), "^https?://")))
    listed = storage.sizes(local.to_pylist())
    sizes = [listed.get(u) for u in media.to_pylist()] if listed else [None] * items.num_rows
    items = items.append_column("media_size", pa.array(sizes, pa.int64()))

    uris = []
    for i, (start, end) in enumerate(cut_shards([s or 0 for s in sizes], shards, workers)):
        uri = storage.join(out_dir, f"shard-{i:05d}.parquet")
        storage.write_parquet(uri, as_samples(items.slice(start, end - start), partition=partition, run_id=run_id))
        uris.append(uri)
    rejects_uri = storage.join(out_dir, "_plan.rejects.parquet")
    storage.write_parquet(rejects_uri, table_of(bad, REJECT_SCHEMA))
    return CollectPlan(
        shards=uris,
        rejects_uri=rejects_uri,
        n_rows=log.n_read,
        n_rows_kept=log.n_read - len(bad),
        n_rejected=len(bad),
        n_items=items.num_rows,
        reasons={"collect:bad_row": len(bad)} if bad else {},
    )


def _bad_row(source: str, row: Row, partition: str, run_id: str) -> dict:
    texts = [{**t, "source": source} for t in row.texts if utf8_ok(t["text"])] or None
    media = row.media if isinstance(row.media, str) and utf8_ok(row.media) else None
    return {
        "sample_id": make_sample_id(source, f"bad-row:{row.number}"),
        "source": source,
        "texts": texts,
        "source_uri": media,
        "source_rows": [row.number],
        "stage": "collect",
        "reason": "collect:bad_row",
        "detail": row.error,
        "partition": partition,
        "run_id": run_id,
    }


def _segments(source: str, row: Row) -> list[dict]:
    """A document Row's segments as Sample segments: a passage by its text, a picture by its item's id."""
    return [
        {"text": None, "image": make_sample_id(source, value)}
        if kind == "image"
        else {"text": row.texts[value]["text"], "image": None}
        for kind, value in row.segments
    ]


def _meta_json(meta: dict | None) -> str | None:
    return json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str) if meta else None


class CollectConfig(NetworkConfig):
    """The recipe's `network:` settings, and where this build keeps its downloads."""

    cache_dir: str | None = None  # downloads kept per shard here (the build's work folder); None: not kept
    blocklist: BlocklistSettings = BlocklistSettings()  # URIs never fetched, files as fetched never kept


class CollectStage(RowStage):
    """Read each item's media from storage, or download it (images over http(s), video and audio links
    through yt-dlp), a batch at a time on `network.threads` threads; cut it to its time window.

    Fetches run on one pool for the whole shard: the next batch's are started (`prefetch`) before this
    batch is cleaned, so the threads never idle at a batch's end waiting for its slowest download (the
    engine shows a batch ahead only while both batches' known bytes fit its bound: tasks/build/engine.py).
    Downloads are kept in `cache_dir/<shard>` as they arrive (and permanent failures noted there), so a
    shard redone after a crash or a retry fetches only what is missing or failed transiently.
    """

    name = "collect"
    Config = CollectConfig
    reads = frozenset({"source_uri", "clip_start_s", "clip_end_s", "region"})
    writes = frozenset({"media_bytes", "media_ext"})

    def __init__(self, config: CollectConfig | None = None, /, **fields):
        super().__init__(config, **fields)
        self.network, self.cache_dir, self.cache = self.config, self.config.cache_dir, None
        self._images = self._links = self._resizer = None
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[str, Future] = {}  # fetches started ahead, by sample id
        self.blocked = Blocklist()  # the lists are read in `setup`, once per worker

    def setup(self) -> None:
        self.blocked = Blocklist.load(self.config.blocklist)

    def start_shard(self, shard: str) -> None:
        if self.cache:
            self.cache.close()
        self.cache = fetch_cache(storage.join(self.cache_dir, shard)) if self.cache_dir else None

    def prefetch(self, batch: pa.Table) -> None:
        for row in batch.to_pylist():
            self._pending[row["sample_id"]] = self._submit(row)

    def process(self, batch: pa.Table) -> StageOutput:
        rows = batch.to_pylist()
        futures = [self._pending.pop(r["sample_id"], None) or self._submit(r) for r in rows]
        self._got = {r["sample_id"]: f.result() for r, f in zip(rows, futures)}
        return super().process(batch)

    def finish_shard(self, shard: str) -> None:
        for future in self._pending.values():  # none, when the engine shows only this shard's batches
            future.cancel()
        self._pending.clear()

    def _submit(self, row: dict) -> Future:
        if self._pool is None:  # threads live as long as the worker: a pool per batch cost its start each time
            self._pool = ThreadPoolExecutor(self.network.threads, thread_name_prefix="fetch")
        return self._pool.submit(self._get, row)

    def check(self, row: dict):
        return self._got.pop(row["sample_id"])

    def _get(self, row: dict):
        if not KINDS[row["modality"]].has_media:  # a document: its texts came with it, its pictures are items
            return row
        uri = row["source_uri"]
        if blocked := self.blocked.item(row):  # never fetched
            return blocked
        try:
            got = self._download(row) if storage.is_url(uri) else self._read(row)
        except FileNotFoundError:
            return Reject("missing_media", uri)
        except FetchError as e:
            return Reject(f"fetch:{e.category}", f"{uri}: {e.detail}")
        except Exception as e:  # no such protocol, bad path, permission: the item goes, the build stays
            return Reject("unreadable_media", f"{uri}: {type(e).__name__}: {e}")
        measured = got.pop("measured", None)  # by a download's resize: what clean would measure (tasks/stages/clean.py)
        if not got["media_bytes"]:
            return Reject("empty_file", uri)
        if blocked := self.blocked.digest(got.pop("fetched_sha256", None), "file as fetched"):
            return blocked
        if row["clip_start_s"] is not None and not got.pop("cut", False):
            try:
                got["media_bytes"], got["media_ext"] = cut(got["media_bytes"], row["clip_start_s"], row["clip_end_s"])
            except MediaError as e:
                return Reject(f"decode:{e.code}", f"cutting {row['clip_start_s']}-{row['clip_end_s']} s: {e.detail}")
        got.pop("cut", None)
        if row["region"]:
            try:
                got["media_bytes"], got["media_ext"] = crop(got["media_bytes"], row["region"])
            except MediaError as e:
                return Reject(f"decode:{e.code}", f"cutting region {row['region']}: {e.detail}")
        elif measured:  # (a region's cut is measured by clean)
            facts = {k: v for k, v in measured.items() if k != "pixel_std"}
            row = with_scores({**row, **facts}, pixel_std=measured["pixel_std"])
        return {**row, **got, "media_size": len(got["media_bytes"])}

    def _read(self, row: dict) -> dict:
        """A local or stored file, and for a video or recording the subtitles beside it as timed texts."""
        uri = row["source_uri"]
        got = {"media_bytes": storage.read_bytes(uri), "media_ext": _extension(uri)}
        if self.blocked.sha256:
            got["fetched_sha256"] = hashlib.sha256(got["media_bytes"]).hexdigest()
        if row["modality"] in ("video", "audio"):
            window = (row["clip_start_s"], row["clip_end_s"]) if row["clip_start_s"] is not None else None
            cues = [{**t, "source": row["source"]} for t in subtitles_beside(uri, window)]
            got.update({"texts": (row["texts"] or []) + cues} if cues else {})
        return got

    def _download(self, row: dict) -> dict:
        cached = self.cache.get(row["sample_id"]) if self.cache else None
        if cached is None:
            try:
                cached = self._fetch(row)
            except FetchError as e:
                if self.cache and not e.transient:  # a rerun does not ask again; a transient one it does
                    self.cache.put_failure(row["sample_id"], row["source_uri"], e)
                raise
            if self.cache:
                self.cache.put(row["sample_id"], row["source_uri"], cached)
        if "failure" in cached:
            raise FetchError(cached["failure"]["category"], cached["failure"]["detail"])
        meta = {**json.loads(row["meta"] or "{}"), **cached.get("meta", {})}
        return {
            "media_bytes": cached["media_bytes"],
            "media_ext": cached["media_ext"],
            "measured": cached.get("measured"),
            "cut": cached.get("cut", False),
            "fetched_sha256": cached.get("fetched_sha256"),  # kept by downloads since blocklists existed
            "texts": (row["texts"] or []) + [{**t, "source": row["source"]} for t in cached.get("texts", [])],
            "meta": json.dumps(meta, sort_keys=True, ensure_ascii=False) if meta else None,
        }

    def _fetch(self, row: dict) -> dict:
        if self._images is None:
            self._start_downloaders()
        if row["modality"] == "image":
            data, ext = self._images.fetch(row["source_uri"])
            # resized before the cache: a download is never kept at full size, but for a region (its box is
            # in the served picture's pixels: it is cut from that picture) and an animated image (clean's
            # `animated` setting keeps its first frame or rejects it); clean shapes those
            resized = self._resizer(data) if self._resizer and not row["region"] else None
            fetched = hashlib.sha256(data).hexdigest()  # what hash blocklists hold: the file as served
            return {**(resized or {"media_bytes": data, "media_ext": ext}), "fetched_sha256": fetched}
        window = (row["clip_start_s"], row["clip_end_s"]) if row["clip_start_s"] is not None else None
        got = self._links.fetch(row["source_uri"], row["modality"], window)
        return {"media_bytes": got.data, "media_ext": got.ext, "cut": got.cut, "meta": got.meta, "texts": got.subtitles,
                "fetched_sha256": hashlib.sha256(got.data).hexdigest()}  # fmt: skip

    def _start_downloaders(self) -> None:
        net = self.network
        with self._lock:  # built once per worker process, on first need, by one thread
            if self._images is not None:
                return
            policy = AddressPolicy(net.allow_hosts)
            self._links = LinkDownloader(
                policy,
                net.timeout_s,
                net.retries,
                net.max_video_bytes,
                net.video_format,
                net.audio_format,
                net.subtitles,
            )
            self._resizer = ImageResizer(**net.resize.model_dump()) if net.resize else None
            # last: other threads go ahead once this is set
            self._images = ImageDownloader(
                policy,
                HostLimiter(net.per_host, net.per_host_rps),
                net.timeout_s,
                net.retries,
                net.max_bytes,
                net.user_agent_token,
                net.disallowed_header_directives,
            )


def subtitles_beside(uri: str, window: tuple[float, float] | None) -> list[dict]:
    """The cues of `.vtt` / `.srt` files beside a media file (`talk.mp4`: `talk.vtt`, `talk.en.srt`), as timed
    texts of kind subtitle (within `window`, from its start, when the item is a window of the file)."""
    stem = uri.rsplit(".", 1)[0]
    found = []
    for path in storage.glob(glob.escape(stem) + ".*"):
        if path.endswith(SUBTITLE_SUFFIXES):
            found += timed_texts(storage.read_bytes(path).decode("utf-8", errors="replace"), "subtitle", window)
    return found


def _extension(uri: str) -> str | None:
    path = uri.split("::", 1)[0]  # tar://member.jpg::archive.tar
    name = path.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else None
