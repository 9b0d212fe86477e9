"""Every item's dedupe signatures, kept as Arrow columns: what the media kinds search for copies
(tasks/media/kinds/), what dedupe and the leakage guard decide over.

A driver holds 10M items' signatures this way in ~2 GB (a dict per item took ~5 kB); a value becomes
a Python object only when a kind asks for one modality's column, and a row becomes a dict only when
a decision needs its item (a cluster's members, a leaking pair).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Signatures:
    """Items keyed by a `key` column (unique across the tables), each table with `modality`, `sha256`
    and the signature columns it has. The tables are searched in order; within one, in row order."""

    def __init__(self, *tables: pa.Table):
        self.tables = [t for t in tables if t.num_rows]

    def __len__(self) -> int:
        return sum(t.num_rows for t in self.tables)

    def of(self, modality: str, column: str) -> tuple[list[str], list]:
        """Keys and values of `column` for the items of `modality` that have one (not null, not empty)."""
        keys, values = [], []
        for table in self.tables:
            if column not in table.column_names:
                continue
            mine = _of(table, modality, column)
            for key, value in zip(mine.column("key").to_pylist(), mine.column(column).to_pylist()):
                if value:
                    keys.append(key)
                    values.append(value)
        return keys, values

    def hex64(self, modality: str, column: str) -> tuple[pa.Array, np.ndarray]:
        """Keys and 64-bit hashes of a hex column (a pHash) for the items of `modality` that have one,
        as an Arrow array and a numpy array: no Python object per item."""
        parts = [_of(t, modality, column) for t in self.tables if column in t.column_names]
        parts = [t for t in parts if t.num_rows]
        if not parts:
            return pa.array([], pa.string()), np.zeros(0, np.uint64)
        both = pa.concat_tables(parts)
        return both.column("key").combine_chunks(), _hex64(both.column(column))

    def exact_pairs(self) -> list[tuple[str, str]]:
        """(a, b), a < b, for every item whose sha256 an earlier one has (tables in order, then keys),
        with that earliest one. Candidates share the digest's first 64 bits (a numpy sort: Arrow's
        group-by over 10M digests held GBs); only they are compared whole."""
        parts = [t.select(["key", "sha256"]).filter(pc.is_valid(t.column("sha256"))) for t in self.tables]
        parts = [t for t in parts if t.num_rows]
        if not parts:
            return []
        prefix = np.concatenate([_hex64(t.column("sha256"), 16) for t in parts])
        order = np.argsort(prefix, kind="stable")
        same = prefix[order][1:] == prefix[order][:-1]
        repeated = np.zeros(len(prefix), bool)
        repeated[order[1:][same]] = repeated[order[:-1][same]] = True
        first: dict[str, str] = {}
        pairs, start = [], 0
        for table in parts:
            mine = repeated[start : start + table.num_rows]
            start += table.num_rows
            copies = table.filter(pa.array(mine)).sort_by("key")
            for key, sha in zip(copies.column("key").to_pylist(), copies.column("sha256").to_pylist()):
                kept = first.setdefault(sha, key)
                if kept != key:
                    pairs.append((min(kept, key), max(kept, key)))
        return pairs

    def rows(self, keys: Iterable[str], columns: list[str] | None = None) -> dict[str, dict]:
        """The rows of these keys (those present), as dicts."""
        wanted = pa.array(sorted(set(keys)), pa.string())
        found = {}
        for table in self.tables:
            picked = table.filter(pc.is_in(table.column("key"), wanted))
            for row in (picked.select(columns + ["key"]) if columns else picked).to_pylist():
                found[row["key"]] = row
        return found


def _of(table: pa.Table, modality: str, column: str) -> pa.Table:
    """key and `column` of the rows of `modality` that have one (only those two columns are copied)."""
    mine = pc.and_(pc.equal(table.column("modality"), modality), pc.is_valid(table.column(column)))
    return table.select(["key", column]).filter(mine)


def _hex64(hexes: pa.ChunkedArray, digits: int | None = None) -> np.ndarray:
    """Hex strings as uint64s (with `digits`, the first 16 of each), without a Python object per value."""
    if digits:
        hexes = pc.utf8_slice_codeunits(hexes, 0, digits)
    if pc.all(pc.equal(pc.utf8_length(hexes), 16)).as_py():
        return np.frombuffer(bytes.fromhex(_joined(hexes)), ">u8").astype(np.uint64)
    return np.array([int(h or "0", 16) & (2**64 - 1) for h in hexes.to_pylist()], np.uint64)  # not all 64-bit


def _joined(values: pa.ChunkedArray) -> str:
    """A string column's values end to end: its data buffer, chunk by chunk (no object per value)."""
    out = []
    for chunk in values.chunks:
        offsets = np.frombuffer(chunk.buffers()[1], np.int32, len(chunk) + 1, chunk.offset * 4)
        out.append(chunk.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]].decode())
    return "".join(out)
