"""Blocklists: media that must never be published, whatever source offers it again.

The recipe's `blocklist:` names lists (a text file of one entry a line, a CSV or a Parquet file with columns
`kind,value`), and a dataset's own takedown list (`<root>/<dataset>/takedowns.parquet`) is always applied. An
entry is `<kind>:<value>`, or a bare value where the list says its kind:

- `url`: a source URI, exactly, or every URI that starts with it when it ends in `*`;
- `domain`: every URL of that host or its subdomains;
- `sha256`: the file as fetched (what external hash lists hold) or as clean normalised it;
- `phash`: a picture (or a video's keyframe) within `radius` bits of it (the list's, or the dedupe radius);
- `chromaprint`: a sound whose fingerprint (the base64 form `fpcalc` prints) is within dedupe's bit error rate;
- `id`: a sample id (what a takedown by id records).

Collect checks an id and a URI before fetching anything and the fetched bytes' sha256; the `blocklist` stage,
after clean, the normalised sha256, the pHashes and the fingerprint. A match is a reject `blocked:<kind>`
naming the entry, so a taken-down item never returns in a later night or a backfill. yt-dlp follows a page's
redirects itself: a domain block covers the URL a source gives, not where yt-dlp is sent from there.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import numpy as np
from pydantic import Field

from ..core import storage
from ..core.settings import Strict
from ..similar.sounds import bit_error_rate
from .stage import Reject, RowStage

BLOCK_KINDS = ("url", "domain", "sha256", "phash", "chromaprint", "id")


class BlocklistFile(Strict):
    """One list: `file` (text, CSV or Parquet), what a bare line of it is, and a pHash list's own radius."""

    file: str
    kind: Literal["url", "domain", "sha256", "phash", "chromaprint", "id"] | None = None  # null: lines say it
    radius: int | None = Field(None, ge=0, le=32)  # pHash bits; null: the recipe's dedupe.image_radius (or 8)


class BlocklistSettings(Strict):
    """What the checks read: the lists, and the pHash radius of lists that give none."""

    files: tuple[BlocklistFile, ...] = ()
    radius: int = 8
    max_ber: float = 0.15  # a listed fingerprint's: dedupe.audio_max_ber


def read_entries(uri: str, kind: str | None = None, kinds: tuple[str, ...] = BLOCK_KINDS) -> list[tuple[str, str]]:
    """(kind, value) of each entry of a list; `#` starts a comment. An entry of an unknown kind is an error
    naming the file and the line."""
    if uri.endswith(".parquet"):
        table = storage.read_parquet(uri, columns=["kind", "value"]).to_pydict()
        lines = [f"{k}:{v}" for k, v in zip(table["kind"], table["value"])]
    elif uri.endswith(".csv"):
        rows = csv.DictReader(io.StringIO(storage.read_bytes(uri).decode()))
        lines = [f"{r['kind']}:{r['value']}" for r in rows]
    else:
        lines = storage.read_bytes(uri).decode().splitlines()
    entries = []
    for number, line in enumerate(lines, 1):
        # a comment starts at `#`; in a URL (which may hold a fragment) only at ` #`
        line = (line.split(" #", 1) if line.startswith(("url:", "http")) else line.split("#", 1))[0].strip()
        if not line:
            continue
        head, sep, rest = line.partition(":")
        if sep and head in kinds:
            entries.append((head, rest.strip()))
        elif kind:
            entries.append((kind, line))
        else:
            raise ValueError(
                f"{uri}:{number}: {line!r} is not `<kind>:<value>` with a kind of {', '.join(BLOCK_KINDS)}"
            )
    return entries


@dataclass
class Blocklist:
    """Every list's entries, indexed for the checks."""

    urls: set[str] = field(default_factory=set)
    prefixes: list[str] = field(default_factory=list)
    domains: set[str] = field(default_factory=set)
    sha256: set[str] = field(default_factory=set)
    phashes: list[tuple[int, int]] = field(default_factory=list)  # (hash, radius)
    ids: set[str] = field(default_factory=set)
    sounds: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (as listed, decoded)
    max_ber: float = 0.15

    @classmethod
    def load(cls, settings: BlocklistSettings) -> Blocklist:
        found = cls(max_ber=settings.max_ber)
        for listed in settings.files:
            for kind, value in read_entries(listed.file, listed.kind):
                found.add(kind, value, listed.radius if listed.radius is not None else settings.radius)
        return found

    def add(self, kind: str, value: str, radius: int) -> None:
        if kind == "id":
            self.ids.add(value)
        elif kind == "chromaprint":
            self.sounds.append((value, decoded_fingerprint(value)))
        elif kind == "url":
            (self.prefixes.append(value[:-1]) if value.endswith("*") else self.urls.add(value))
        elif kind == "domain":
            self.domains.add(value.lower().strip("."))
        elif kind == "sha256":
            self.sha256.add(value.lower())
        else:
            self.phashes.append((int(value, 16), radius))

    def __bool__(self) -> bool:
        return bool(
            self.urls or self.prefixes or self.domains or self.sha256 or self.phashes or self.ids or self.sounds
        )

    def item(self, row: dict) -> Reject | None:
        """Before anything is fetched: the item's id, and its URI."""
        if row["sample_id"] in self.ids:
            return Reject("blocked:id", f"{row['sample_id']} is listed")
        return self.uri(row["source_uri"] or "")

    def media(self, row: dict) -> Reject | None:
        """Once clean has made the media: its sha256, its pictures, its sound."""
        pictures = [row["phash"]] if row.get("phash") else list(row.get("keyframe_phashes") or [])
        return self.digest(row["sha256"], "media as published") or self.pictures(pictures) or self.sound(row)

    def sound(self, row: dict) -> Reject | None:
        printed = np.asarray(row.get("audio_fingerprint") or [], np.uint32)
        for listed, fingerprint in self.sounds if len(printed) else ():
            ber = bit_error_rate(printed, fingerprint)
            if ber <= self.max_ber:
                return Reject("blocked:chromaprint", f"fingerprint at bit error rate {ber:.3f} from {listed[:24]}...")
        return None

    def uri(self, uri: str) -> Reject | None:
        """A URI blocked exactly, by a prefix, or by its host."""
        if uri in self.urls:
            return Reject("blocked:url", f"{uri} is listed")
        prefix = next((p for p in self.prefixes if uri.startswith(p)), None)
        if prefix is not None:
            return Reject("blocked:url", f"{uri} is under {prefix}*")
        host = (urlsplit(uri).hostname or "").lower() if storage.is_url(uri) else ""
        parts = host.split(".")
        blocked = next((".".join(parts[i:]) for i in range(len(parts)) if ".".join(parts[i:]) in self.domains), None)
        return Reject("blocked:domain", f"{uri}: {blocked} is listed") if blocked else None

    def digest(self, sha256: str | None, what: str) -> Reject | None:
        if sha256 and sha256.lower() in self.sha256:
            return Reject("blocked:sha256", f"the sha256 of the {what} is listed: {sha256}")
        return None

    def _phash_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The listed pHashes and their radii as arrays, made once (a list may hold millions)."""
        if getattr(self, "_arrays", (None, -1))[1] != len(self.phashes):
            hashes = np.array([h for h, _ in self.phashes], np.uint64)
            self._arrays = ((hashes, np.array([r for _, r in self.phashes])), len(self.phashes))
        return self._arrays[0]

    def pictures(self, hexes: list[str]) -> Reject | None:
        """A picture (or any keyframe) within its entry's radius of a listed pHash."""
        if not self.phashes or not hexes:
            return None
        listed, radii = self._phash_arrays()
        for hexed in hexes:
            distances = np.bitwise_count(listed ^ np.uint64(int(hexed, 16)))
            hit = np.flatnonzero(distances <= radii)
            if len(hit):
                near = hit[distances[hit].argmin()]
                return Reject(
                    "blocked:phash", f"pHash {hexed} is {distances[near]} bits from listed {listed[near]:016x}"
                )
        return None


class BlocklistStage(RowStage):
    """After clean: an item whose normalised media or pictures are listed is rejected."""

    name = "blocklist"
    Config = BlocklistSettings
    reads = frozenset({"sha256"})
    writes = frozenset()

    def setup(self) -> None:
        self.blocked = Blocklist.load(self.config)

    def check(self, row: dict):
        return self.blocked.media(row) or row


def decoded_fingerprint(value: str) -> np.ndarray:
    """A Chromaprint fingerprint from the base64 form `fpcalc` prints (the one external lists hold)."""
    import chromaprint

    try:
        fingerprint, _ = chromaprint.decode_fingerprint(value.encode())
    except Exception as e:  # the C library's own error for a value that is not a fingerprint
        raise ValueError(f"{value[:24]}... is not a Chromaprint fingerprint: {e}") from None
    return np.asarray(fingerprint, np.int64).astype(np.uint32)
