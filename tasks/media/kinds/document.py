"""Documents: interleaved text and pictures (OBELICS, MMC4, MINT-1T), one item per document.

A document has no file of its own. Its passages are its texts; each of its pictures is an image item of its
own, `part_of` it (fetched, decoded, deduplicated and filtered as every image is); `segments` keeps the
reading order: a passage by its text, a picture by its item's sample id. What a picture's fate does to its
documents is decided once every shard is judged (tasks/stages/documents.py). In a tar, a document is its JSON,
its pictures (`<n>.<ext>`, each once, in reading order) and its passages as text.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.compute as pc

from ...core.schema import MEMBER_SEGMENT
from ..text import clean_text, normalize_caption
from .base import MediaKind


class Document(MediaKind):
    name = "document"
    extensions = frozenset()  # never a file: a document comes from its annotation
    has_media = False
    composite = True
    card_tasks = ("image-text-to-text",)
    member_parts = (pa.field("segments", pa.list_(MEMBER_SEGMENT)),)

    def __init__(self, settings) -> None:
        self.pii = settings.pii

    def facts(self, row: dict) -> dict:
        """Its segments following its passages as clean leaves them (a passage left empty leaves the order);
        its sha256 is of the cleaned document, so a copy of it is an exact duplicate."""
        cleaned: dict[str, str] = {}
        segments = []
        for segment in row["segments"] or []:
            if segment["image"] is not None:
                segments.append(segment)
                continue
            raw = segment["text"]
            if raw not in cleaned:
                cleaned[raw] = normalize_caption(clean_text(raw, self.pii)[0])
            if cleaned[raw]:
                segments.append({"text": cleaned[raw], "image": None})
        canonical = json.dumps(segments, ensure_ascii=False, sort_keys=True).encode()
        return {"segments": segments, "sha256": hashlib.sha256(canonical).hexdigest(), "media_size": 0}

    @classmethod
    def member_json(cls, row: dict, pictures: dict[str, str] | None = None) -> bytes:
        """Its segments name the member that holds each picture (`pictures`: image id -> member suffix)."""
        shown = [{**s, "member": pictures[s["image"]] if s["image"] else None} for s in row["segments"]]
        return super().member_json({**row, "segments": shown})

    @classmethod
    def members(cls, row, media, sidecars, pictures):
        """Its JSON, each of its pictures once, in reading order, and its passages as text."""
        order = list(dict.fromkeys(s["image"] for s in row["segments"] if s["image"]))
        names = {image: f"{n}.{pictures[image][0]}" for n, image in enumerate(order)}
        text = "\n\n".join(s["text"] for s in row["segments"] if s["text"])
        json_member = ("json", cls.member_json(row, names))
        return [json_member] + [(names[i], pictures[i][1]) for i in order] + [("txt", text.encode())]

    @staticmethod
    def stats(index: pa.Table) -> dict:
        """How many documents, and the pictures they show: distinct, and as segments (a picture two documents
        show counts once and twice)."""
        documents = index.filter(pc.equal(index.column("modality"), Document.name)).column("segments").to_pylist()
        if not documents:
            return {}
        shown = [s["image"] for segments in documents for s in segments if s["image"]]
        passages = sum(1 for segments in documents for s in segments if s["text"] is not None)
        return {"documents": {"documents": len(documents), "pictures": len(set(shown)), "picture_segments": len(shown),
                              "passages": passages}}  # fmt: skip
