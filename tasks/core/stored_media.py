"""The media of a few items, read where a build keeps them: what dedupe and the leakage guard verify a
candidate pair on, and rank a cluster's members by. Decisions hold signature columns, never media, so
what this reads follows the number of candidates, not of items.

- This build's items: the clean step's `<shard>.media.parquet` files (tasks/build/engine.py). Only the row
  groups that hold an asked-for item are read.
- Items that earlier partitions published (keys `partition/sample_id`): the member of the published tar
  that holds each, found through the version's index.
"""

from __future__ import annotations

import tarfile
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import storage


class StoredMedia:
    def __init__(self, media_uris: Iterable[str], root: str | None = None, dataset: str | None = None):
        self.media_uris = [u for u in media_uris if u]
        self.root, self.dataset = root, dataset
        self._where: dict[str, tuple[int, int]] | None = None  # sample_id -> (file, row)

    def get(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Media bytes of these keys (sample ids, or partition/sample_id for published items); a key whose
        media cannot be found is absent from the answer."""
        keys = set(keys)
        ours = {k for k in keys if "/" not in k}
        found = self._ours(ours) if ours else {}
        theirs = keys - ours
        if theirs and self.root and self.dataset:
            found.update(self._published(theirs))
        return found

    def _ours(self, ids: set[str]) -> dict[str, bytes]:
        if self._where is None:
            self._where = {}
            for f, uri in enumerate(self.media_uris):
                if storage.exists(uri):
                    names = pq.read_table(_open(uri), columns=["sample_id"]).column("sample_id").to_pylist()
                    self._where.update((name, (f, row)) for row, name in enumerate(names))
        rows_of = defaultdict(list)
        for sample_id in ids:
            if sample_id in self._where:
                f, row = self._where[sample_id]
                rows_of[f].append(row)
        found = {}
        for f, rows in rows_of.items():
            table = _rows(self.media_uris[f], np.array(sorted(rows)))
            found.update(zip(table.column("sample_id").to_pylist(), table.column("media_bytes").to_pylist()))
        return found

    def _published(self, keys: set[str]) -> dict[str, bytes]:
        by_partition = defaultdict(set)
        for key in keys:
            partition, sample_id = key.split("/", 1)
            by_partition[partition].add(sample_id)
        found = {}
        for partition, ids in by_partition.items():
            version = storage.join(self.root, self.dataset, "versions", partition)
            if not storage.exists(storage.join(version, "manifest.json")):
                continue
            manifest = storage.read_json(storage.join(version, "manifest.json"))
            for split in manifest["splits"].values():
                index = storage.read_parquet(storage.join(version, split["index"]))
                index = index.filter(pc.is_in(index.column("sample_id"), pa.array(sorted(ids), pa.string())))
                for tar_name, rows in _group_by(index.select(["sample_id", "tar", "key", "media_ext"]).to_pylist()):
                    members = {f"{r['key']}.{r['media_ext']}": r["sample_id"] for r in rows}
                    fs, path = storage.filesystem(storage.join(version, tar_name))
                    with fs.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
                        for member in tar:
                            if member.name in members:
                                found[f"{partition}/{members[member.name]}"] = tar.extractfile(member).read()
        return found


def _group_by(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    groups = defaultdict(list)
    for row in rows:
        if row["tar"]:
            groups[row["tar"]].append(row)
    return sorted(groups.items())


def _open(uri: str):
    fs, path = storage.filesystem(uri)
    return fs.open(path, "rb")


def _rows(uri: str, rows: np.ndarray) -> pa.Table:
    """These rows (sorted positions) of a media file, reading only the row groups that hold them."""
    with _open(uri) as f:
        parquet = pq.ParquetFile(f)
        sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
        starts = np.cumsum([0] + sizes)
        group_of = np.searchsorted(starts, rows, side="right") - 1
        groups = np.unique(group_of)
        table = parquet.read_row_groups(groups.tolist(), columns=["sample_id", "media_bytes"])
        first = np.cumsum([0] + [sizes[g] for g in groups])  # where each group read starts in `table`
        return table.take(pa.array(first[np.searchsorted(groups, group_of)] + rows - starts[group_of], pa.int64()))


class MediaFile:
    """A media file clean wrote, read a row group at a time: only the groups holding the items asked for."""

    def __init__(self, uri: str):
        self.uri = uri
        self.file = pq.ParquetFile(storage.filesystem(uri)[0].open(storage.filesystem(uri)[1], "rb"))
        ids = self.file.read(columns=["sample_id"]).column("sample_id").to_pylist()
        sizes = [self.file.metadata.row_group(g).num_rows for g in range(self.file.num_row_groups)]
        self.group_of = dict(zip(ids, np.repeat(np.arange(len(sizes)), sizes).tolist()))

    def read(self, sample_ids: list[str]) -> dict[str, tuple[bytes, list]]:
        out = {}
        for group in sorted({self.group_of[s] for s in sample_ids}):
            table = self.file.read_row_group(group, columns=["sample_id", "media_bytes", "sidecars"])
            for row in table.to_pylist():
                out[row["sample_id"]] = (row["media_bytes"], row["sidecars"])
        return out
