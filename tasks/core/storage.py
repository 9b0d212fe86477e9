"""Object storage through fsspec: a local folder (the embedded default) or s3://bucket/prefix.

Commit rule: a shard, a stage or a dataset version exists only once its JSON manifest is written,
last. Object stores have no atomic rename, so readers trust manifests, never listings, and a rerun
overwrites any half-written file under the same deterministic name.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from . import memory  # noqa: F401  (freed buffers go back to the OS: see tasks/core/memory.py)

DEFAULT_ROOT = "./data"


def storage_root(explicit: str | None = None) -> str:
    """The storage root: an explicit argument, else $MMETL_STORAGE, else ./data."""
    root = explicit or os.environ.get("MMETL_STORAGE") or DEFAULT_ROOT
    if "://" not in root:
        root = os.path.abspath(root)
    return root.rstrip("/")


class StorageUnreachable(RuntimeError):
    """The storage root cannot be written: the message names the root and the cause, in one line."""


def check_writable(root: str) -> None:
    """Write and remove a small probe object under `root`, so a build fails before it starts anything
    when the root is unreachable (no credentials, no bucket, no permission, a read-only folder)."""
    probe = join(root, f".mmetl-probe-{uuid.uuid4().hex}")
    try:
        write_bytes(probe, b"mmetl checks that it can write here\n")
        remove(probe)
    except Exception as e:
        raise StorageUnreachable(f"cannot write to the storage root {root}: {cause(e)}") from e


def cause(error: Exception) -> str:
    """What went wrong reaching storage, for people, in one line."""
    name = type(error).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return "no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
    return f"{name}: {error}".splitlines()[0][:300]


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = url_to_fs(uri)
    return fs, path


def local_path(uri: str) -> str | None:
    """The path of a URI on this machine's disk, or None for object storage."""
    fs, path = filesystem(uri)
    return path if isinstance(fs, LocalFileSystem) else None


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):  # a plain read: 16 against 40-50 us through fsspec's file object
        with open(path, "rb") as f:
            return f.read()
    return fs.cat_file(path)


def _write_aside(path: str, data: bytes) -> str:
    """Write to a unique temp file beside `path`; the caller renames or links it into place."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
        f.write(data)
    return tmp


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object. Locally via a temp file + rename; on S3 a PUT is already all-or-nothing."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        os.replace(_write_aside(path, data), path)
    else:
        fs.pipe_file(path, data)


def create_exclusive(uri: str, data: bytes) -> bool:
    """Create an object only if it does not exist yet; False if it did. S3 does this with a
    conditional PUT (If-None-Match), so two writers racing for one name cannot both win."""
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        tmp = _write_aside(path, data)  # then link: the name appears with its content, or not at all
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True
    if not data:
        raise ValueError("an exclusive create needs content (s3fs touches empty objects unconditionally)")
    try:
        with fs.open(path, "xb") as f:
            f.write(data)
    except FileExistsError:
        return False
    return True


def write_json(uri: str, obj) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True).encode())


def read_json(uri: str):
    return json.loads(read_bytes(uri))


def parquet_bytes(table: pa.Table) -> bytes:
    """Deterministic bytes for the same table, so local and S3 outputs compare equal."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


@contextlib.contextmanager
def open_output(uri: str):
    """A file to stream a large object into; it appears under its name whole, or not at all.

    Locally a temp file renamed into place; on S3 a multipart upload that completes on close and is
    discarded on error. Memory stays bounded by what the caller writes at a time.
    """
    fs, path = filesystem(uri)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                yield f
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    f = fs.open(path, "wb")
    try:
        yield f
    except BaseException:
        f.discard()  # abort the multipart upload: nothing appears
        raise
    f.close()


@contextlib.contextmanager
def parquet_writer(uri: str, schema: pa.Schema, compression: str = "zstd", **options):
    """Append row groups to a Parquet file one batch at a time (see open_output); `options` go to
    pyarrow's ParquetWriter."""
    with open_output(uri) as f, pq.ParquetWriter(f, schema, compression=compression, **options) as writer:
        yield writer


def write_parquet(uri: str, table: pa.Table) -> None:
    write_bytes(uri, parquet_bytes(table))


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        # One file, so no dataset: read_table's discovery cost ~40% more on the ~2,000-row shards a 10M-item
        # decision reads by the thousand (bench/driver.py). Single-threaded: pyarrow 26's threaded read
        # leaves its pool to abort a process that exits soon after ("terminate called without an active
        # exception", e.g. `mmetl inspect`); callers that read many files use threads of their own.
        return pq.ParquetFile(f).read(columns=columns, use_threads=False)


def iter_parquet_batches(uri: str, batch_rows: int, columns: list[str] | None = None):
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        yield from pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=columns, use_threads=False)


def is_url(uri: str) -> bool:
    """A web address to download (http, https), as opposed to a path or an object-storage URI."""
    return uri.startswith(("http://", "https://"))


def sizes(uris: list[str]) -> dict[str, int | None]:
    """Each object's size in bytes, None where it is absent or cannot be listed.

    One listing per folder rather than one request per object: on S3 a folder of 100k images is
    100 list calls, not 100k HEADs.
    """
    by_folder: dict[str, list[str]] = defaultdict(list)
    out: dict[str, int | None] = {}
    for uri in uris:
        if is_url(uri):  # fetched, not listed: its size is known once it arrives
            out[uri] = None
            continue
        folder, _, name = uri.rpartition("/")
        by_folder[folder].append(name)
    for folder, names in by_folder.items():
        fs, path = filesystem(folder)
        try:
            listing = {
                e["name"].rsplit("/", 1)[-1]: e.get("size") for e in fs.ls(path, detail=True) if e.get("type") == "file"
            }
        except (OSError, ValueError):  # absent, not a folder, no permission: the reader will say which
            listing = {}
        for name in names:
            out[f"{folder}/{name}"] = listing.get(name)
    return out


def move(src: str, dst: str) -> None:
    """Local: an atomic rename. S3: a server-side copy, then the delete."""
    fs, src_path = filesystem(src)
    _, dst_path = filesystem(dst)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(dst_path), exist_ok=True)
        os.replace(src_path, dst_path)
    else:
        fs.mv(src_path, dst_path)


def remove(uri: str, recursive: bool = False) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def list_files(uri: str) -> list[str]:
    """Every file under a folder, as paths relative to it (for tests and tooling, never for commit logic)."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return []
    base = path.rstrip("/") + "/"
    return sorted(p[len(base) :] for p in fs.find(path))


def glob(pattern: str) -> list[str]:
    """URIs matching a glob (`s3://bucket/*/versions/*/manifest.json`), sorted: for listings and
    tooling, never for commit logic."""
    fs, path = filesystem(pattern)
    scheme = pattern.split("://", 1)[0] + "://" if "://" in pattern and not pattern.startswith("file://") else ""
    return sorted(scheme + p for p in fs.glob(path))


@dataclass(frozen=True)
class Layout:
    """Where one build of one dataset partition keeps its work and publishes its version.

    {root}/{dataset}/work/{partition}/{build_key}/{step}/shard-00000.parquet   work shards (removed
                                                                               once published)
    {root}/{dataset}/versions/{partition}/                                    the published version
    """

    root: str
    dataset: str
    partition: str
    build_key: str

    @property
    def work(self) -> str:
        return join(self.root, self.dataset, "work", self.partition, self.build_key)

    def step_dir(self, step: str) -> str:
        return join(self.work, step)

    @property
    def version(self) -> str:
        return join(self.root, self.dataset, "versions", self.partition)

    @property
    def version_manifest(self) -> str:
        return join(self.version, "manifest.json")

    @property
    def takedowns(self) -> str:
        """What `mmetl takedown` removed from this dataset: applied as a blocklist by every later build."""
        return join(self.root, self.dataset, "takedowns.parquet")

    @property
    def reviews(self) -> str:
        """Reviewers' verdicts (`mmetl review import`): every later build's rule stages apply them."""
        return join(self.root, self.dataset, "reviews.parquet")

    @property
    def run_log(self) -> str:
        """Where build runs of this dataset leave a line each (see tasks/publish/catalog.py)."""
        return join(self.root, self.dataset, "runs")

    @property
    def latest(self) -> str:
        """Names the newest partition's version (publish.point_latest)."""
        return join(self.root, self.dataset, "latest")

    @property
    def version_claim(self) -> str:
        """Taken once, by the first build to publish this partition; see publish.claim_version."""
        return join(self.version, "_claim.json")
