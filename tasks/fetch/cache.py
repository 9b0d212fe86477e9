"""What a build has downloaded, kept as it arrives, so that a shard redone after a kill or a retry asks
no server again for what it already has (and not again for a permanent failure either).

Each entry is a header (the URL, the extension, metadata, or the failure) and the media bytes.

- `FetchLog`, on a local disk: each process appends entries to a log file of its own. Creating two
  files per download (a temp file and its rename) cost a quarter of a download's CPU time here; an
  append costs a write. A kill leaves at most a torn last entry, which reading skips; a new process
  never appends to an old log.
- `FetchObjects`, on object storage (no appends there): one object per entry, one PUT, whole or absent.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import uuid

from ..core import storage
from . import FetchError

RECORD = struct.Struct("<IQ")  # header length, media length


def fetch_cache(folder: str) -> FetchLog | FetchObjects:
    path = storage.local_path(folder)
    return FetchLog(path) if path else FetchObjects(folder)


def _entry(uri: str, got: dict | None = None, error: FetchError | None = None) -> tuple[dict, bytes]:
    if error:
        return {"uri": uri, "failure": {"category": error.category, "detail": error.detail}}, b""
    return {"uri": uri, **{k: v for k, v in got.items() if k != "media_bytes"}}, got["media_bytes"]


class FetchLog:
    def __init__(self, folder: str):
        self.folder = folder
        # id -> (log, offset, length, header), read on first use: a shard's downloads, at most
        self.index: dict[str, tuple[str, int, int, dict]] | None = None
        self.log = None
        self.lock = threading.Lock()

    def entries(self) -> dict[str, dict]:
        """Every download kept, id -> header (no media): what a rerun will not fetch again."""
        with self.lock:
            return {sample_id: header for sample_id, (*_, header) in self._read_index().items()}

    def get(self, sample_id: str) -> dict | None:
        with self.lock:
            if self.index is None:
                self.index = self._read_index()
            found = self.index.get(sample_id)
        if found is None:
            return None
        path, offset, length, header = found
        entry = dict(header)
        if "failure" not in entry:
            with open(path, "rb") as f:
                f.seek(offset)
                entry["media_bytes"] = f.read(length)
        return entry

    def put(self, sample_id: str, uri: str, got: dict) -> None:
        self._append(sample_id, *_entry(uri, got))

    def put_failure(self, sample_id: str, uri: str, error: FetchError) -> None:
        self._append(sample_id, *_entry(uri, error=error))

    def close(self) -> None:
        if self.log:
            self.log.close()

    def _append(self, sample_id: str, header: dict, media: bytes) -> None:
        head = json.dumps({"id": sample_id, **header}).encode()
        with self.lock:
            if self.log is None:
                os.makedirs(self.folder, exist_ok=True)
                self.log = open(os.path.join(self.folder, f"{uuid.uuid4().hex}.log"), "ab")
            self.log.write(RECORD.pack(len(head), len(media)) + head + media)
            self.log.flush()  # in the OS's hands: a killed process loses nothing it wrote

    def _read_index(self) -> dict:
        index = {}
        names = sorted(os.listdir(self.folder)) if os.path.isdir(self.folder) else []
        for name in names:
            if not name.endswith(".log"):
                continue
            path = os.path.join(self.folder, name)
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                while (fixed := f.read(RECORD.size)) and len(fixed) == RECORD.size:
                    head_length, media_length = RECORD.unpack(fixed)
                    head = f.read(head_length)
                    offset = f.tell()
                    if len(head) < head_length or offset + media_length > size:
                        break  # the torn end of a killed writer's log
                    header = json.loads(head)
                    index[header.pop("id")] = (path, offset, media_length, header)
                    f.seek(media_length, os.SEEK_CUR)
        return index


class FetchObjects:
    def __init__(self, folder: str):
        self.folder = folder

    def close(self) -> None:
        pass

    def entries(self) -> dict[str, dict]:
        names = [uri.rsplit("/", 1)[-1] for uri in storage.list_files(self.folder)]
        ids = [name.removesuffix(".fetched") for name in names if name.endswith(".fetched")]
        return {i: {k: v for k, v in self.get(i).items() if k != "media_bytes"} for i in ids}

    def get(self, sample_id: str) -> dict | None:
        try:
            data = storage.read_bytes(self._uri(sample_id))
        except FileNotFoundError:
            return None
        head, _, media = data.partition(b"\n")
        entry = json.loads(head)
        if "failure" not in entry:
            entry["media_bytes"] = media
        return entry

    def put(self, sample_id: str, uri: str, got: dict) -> None:
        self._write(sample_id, *_entry(uri, got))

    def put_failure(self, sample_id: str, uri: str, error: FetchError) -> None:
        self._write(sample_id, *_entry(uri, error=error))

    def _write(self, sample_id: str, header: dict, media: bytes) -> None:
        storage.write_bytes(self._uri(sample_id), json.dumps(header).encode() + b"\n" + media)

    def _uri(self, sample_id: str) -> str:
        return storage.join(self.folder, f"{sample_id}.fetched")
