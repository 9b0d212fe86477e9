"""The media kind interface: what a kind knows of its items, from its files to its tar members."""

from __future__ import annotations

import functools
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar

import pyarrow as pa

from ...core.schema import MEMBER_TEXT, SAMPLE_SCHEMA, SCORE, scores_dict
from ...core.settings import Strict
from ...similar.search import CopySearch
from ...similar.signatures import Signatures
from ..ocr import OcrMode, Reading

# (a, b, reject reason, what was measured): two items found to be one media
Pair = tuple[str, str, str, str]
# media bytes of items by key (tasks/core/stored_media.py): what a candidate pair is verified on
Fetch = Callable[[Iterable[str]], dict[str, bytes]]


class MediaKind(ABC):
    name: ClassVar[str]
    extensions: ClassVar[frozenset[str]]
    signatures: ClassVar[tuple[str, ...]] = ()  # the Sample columns `duplicate_pairs` compares
    # how clean publishes this kind: the recipe's `clean.<name>` (tasks/stages/clean.py)
    Settings: ClassVar[type[Strict] | None] = None
    # the recipe's `align:` part that scores this kind's texts against its media (tasks/stages/score.py)
    aligned_by: ClassVar[str | None] = None
    has_media: ClassVar[bool] = True  # an item is one media file: fetched, decoded, stored, in its tar
    composite: ClassVar[bool] = False  # its tar members hold other items' media (a document's pictures)
    card_tasks: ClassVar[tuple[str, ...]] = ()  # what the Hugging Face hub calls its tasks (the data card)
    # its `<key>.json` tar member (member_schema): the Sample columns of its facts (after the identity), of
    # its lineage beyond the source and time window, and fields of its own (after the lineage)
    member_facts: ClassVar[tuple[str, ...]] = ()
    member_lineage: ClassVar[tuple[str, ...]] = ()
    member_parts: ClassVar[tuple[pa.Field, ...]] = ()

    @abstractmethod
    def __init__(self, settings) -> None:
        """`settings`: clean's settings (tasks/clean.CleanSettings): the recipe's `clean:` and `features:`."""

    def facts(self, row: dict) -> dict:
        """What clean records of an item besides its texts: its media decoded once (or as a download's resize
        measured it), normalized, with its size and digest. Raises MediaError for media that cannot be used."""
        facts = self.measured(row) or self.clean(row["media_bytes"])
        data = facts["media_bytes"]
        return {**facts, "media_size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def clean(self, data: bytes) -> dict:
        """Decode once; the item's normalized `media_bytes`, `media_ext`, facts, `_scores` and sidecars.
        Raises MediaError for media that cannot be used. Every kind that `has_media` defines it (a test
        checks); a kind without a file (a document) overrides `facts` instead."""
        raise TypeError(f"media kind {self.name} has files but no clean()")

    def measured(self, row: dict) -> dict | None:
        """The facts `clean` would return, when a decode earlier in this step already took them of exactly
        the row's bytes (a download's resize, tasks/fetch/resize.py) and the bytes are what clean would
        publish: clean then decodes nothing. None: decode."""
        return None

    @staticmethod
    def duplicate_pairs(items: Signatures, config: CopySearch) -> Iterator[Pair]:
        """Pairs of this kind's items (`items`: every item's signature columns) that are copies of one media:
        on evidence from the media itself (a video's pictures, not its sound)."""
        return iter(())

    @staticmethod
    def verified(
        candidates: list[Pair], fetch: Fetch | None, config: CopySearch, known: dict | None = None
    ) -> tuple[list[Pair], dict, dict]:
        """The candidates that are copies of one media, checked on the media itself where a signature alone
        could mistake two distinct ones for copies; a report of the check; and the score of each pair it
        measured ((a, b) -> score; `known`: scores measured before, not measured again). Here: all of them."""
        return candidates, {}, {}

    @staticmethod
    def related_pairs(items: Signatures, config: CopySearch) -> Iterator[Pair]:
        """Pairs that are not one media but share a part (a sound track): one group, neither rejected."""
        return iter(())

    @staticmethod
    def distance(a: dict, b: dict) -> float:
        """How far apart two copies are, 0 to 1, on the signature that links them (the keep policy's medoid)."""
        return 0.0 if a["sha256"] == b["sha256"] else 1.0

    @classmethod
    def mean_distances(cls, members: list[dict], fetch: Fetch | None = None) -> list[float]:
        """Each member's mean `distance` to the others (the medoid is the least); `fetch` gives the
        members' media where a kind ranks on something finer than its signature."""
        return [sum(cls.distance(m, o) for o in members if o is not m) / (len(members) - 1) for m in members]

    @classmethod
    def member_schema(cls) -> pa.Schema:
        """The fields of this kind's `<key>.json` tar member, in order: the same for every item of the kind, null
        where unset, so a reader that infers one schema per set of tars (Hugging Face datasets) sees them all;
        the card declares them (tasks/publish/card.py)."""
        return _member_schema(cls)

    @classmethod
    def member_json(cls, row: dict) -> bytes:
        """The item's `<key>.json`: every field of its member schema, in order (texts and scores reshaped)."""
        meta = {name: row.get(name) for name in _json_fields(cls)}
        meta["texts"] = [{f.name: t.get(f.name) for f in MEMBER_TEXT} for t in row["texts"]]
        meta["scores"] = [{"name": k, "value": v} for k, v in scores_dict(row).items()]
        return json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def members(cls, row: dict, media, sidecars: list[dict] | None, pictures: dict) -> list[tuple[str, bytes]]:
        """An item's tar members (name suffix, bytes), in the order they are written: its media (`media`: its
        bytes, or anything with their length), its sidecars, its JSON and its first text. `pictures` (image
        id -> (extension, bytes)) is for a composite kind."""
        found = [(row["media_ext"], media)] + [(s["name"], s["data"]) for s in sidecars or []]
        return found + [("json", cls.member_json(row)), ("txt", row["texts"][0]["text"].encode())]

    @staticmethod
    def stats(index: pa.Table) -> dict:
        """What a version's stats.json says of this kind's published items beyond the counts every kind has."""
        return {}


def with_reading(facts: dict, reading: Reading, mode: OcrMode) -> dict:
    """Clean's facts with what OCR found in the picture: the `text_area` score and, when reading, the lines
    as a text of kind `ocr` (`_texts`: clean cleans them as it does the source's texts)."""
    found = {**facts, "_scores": {**facts.get("_scores", {}), "text_area": reading.text_area}}
    if mode == "read" and reading.lines:
        found["_texts"] = [{"text": reading.text, "kind": "ocr"}]
    return found


def features_json(value: dict) -> str:
    """An item's `features` (what its sidecars are), as the Sample column holds it: JSON text."""
    return json.dumps(value, sort_keys=True)


# the identity and lineage every member holds, around a kind's facts
MEMBER_IDENTITY = ("sample_id", "group_id", "source", "modality", "split", "media_ext", "media_size", "sha256")
MEMBER_LINEAGE = ("source_uri", "clip_start_s", "clip_end_s")


@functools.cache  # per item in every tar written: built once per kind
def _member_schema(kind: type[MediaKind]) -> pa.Schema:
    names = MEMBER_IDENTITY + kind.member_facts + MEMBER_LINEAGE + kind.member_lineage
    return pa.schema(
        [SAMPLE_SCHEMA.field(n).with_nullable(True) for n in names]
        + list(kind.member_parts)
        + [
            pa.field("texts", pa.list_(MEMBER_TEXT)),
            pa.field("scores", pa.list_(SCORE)),
            pa.field("features", pa.string()),  # JSON text: what the sidecar members are
        ]
    )


@functools.cache
def _json_fields(kind: type[MediaKind]) -> tuple[str, ...]:
    """The member schema's fields taken from the row as they are (texts and scores are reshaped)."""
    return tuple(f.name for f in kind.member_schema() if f.name not in ("texts", "scores"))
