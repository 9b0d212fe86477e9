"""Documents: interleaved text and pictures (OBELICS, MMC4, MINT-1T), one item per document.

A document is a media kind of its own (tasks/media/kinds/document.py): its passages are its texts (cleaned
and language-identified as every text is); each of its pictures is an image item of its own, `part_of` the
document, so it is fetched, decoded, measured, deduplicated and filtered as every image is, and stored once
however many documents show it (and whatever caption source holds it too). `segments` keeps the reading
order: a passage by its text, a picture by its item's sample id.

What a picture's fate does to its documents is known only once every shard is judged, so it is a
decision (`resolve_documents`) between the filter and the split, and a stage applies it per shard:

- a picture dropped as a copy points at the item kept in its place;
- a picture rejected for anything else drops its segment (a dropped-text row of kind `image`, with the
  picture's reason), not the document;
- a document is rejected when no picture is left (`document:no_images`), or by the document rules of
  `filter:` (images per document, words, the share of its pictures dropped);
- a picture whose documents are all gone, with no text of its own, goes too (`document:orphan_image`).

A picture with texts of its own (a caption source holds it as well) is published as an image item
too; one that is only a part of documents is published inside them (tasks/publish/tars.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa

from ..core import storage
from ..core.committed import Record, committed
from ..core.schema import table_of
from ..core.settings import Strict
from ..media.kinds import KINDS
from .filter import FilterConfig
from .stage import Reject, RowStage

DECISION_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("segments_json", pa.string()),  # the document's resolved segments (JSON), for a kept document
        ("dropped_json", pa.string()),  # [[image id, reason, detail]]: pictures whose segments went
        ("reason", pa.string()),  # why the item goes (a document or an orphan picture); null: it stays
        ("detail", pa.string()),
    ]
)


def _fates_of_pictures(reject_uris: list[str]) -> dict[str, tuple[str, str, str | None]]:
    """Each rejected picture: (reason, detail, duplicate_of)."""
    fates = {}
    for uri in reject_uris:
        rejects = storage.read_parquet(uri, columns=["sample_id", "modality", "reason", "detail", "duplicate_of"])
        for r in rejects.to_pylist():
            kind = KINDS.get(r["modality"])  # a broken annotation row has none
            if kind is not None and kind.has_media:  # what a segment can show
                fates[r["sample_id"]] = (r["reason"], r["detail"], r["duplicate_of"])
    return fates


def _orphans(items: dict[str, dict], used: set[str]) -> list[dict]:
    """Pictures that were only part of documents, none of which shows them now: rejects."""
    return [
        {"sample_id": i, "reason": "document:orphan_image", "detail": f"its {len(item['part_of'])} document(s) went"}
        for i, item in items.items()
        if item["part_of"] and not item["texts"] and i not in used
    ]


@dataclass(frozen=True)
class DocumentsDecision(Record):
    uri: str  # DECISION_SCHEMA rows: what the documents stage applies
    documents: int
    documents_rejected: int
    images_dropped: int
    orphan_images: int  # pictures no surviving document shows (and no caption holds)


@committed(lambda out_uri, **_: out_uri + ".json", DocumentsDecision)
def resolve_documents(
    shard_uris: list[str], reject_uris: list[str], config: FilterConfig, out_uri: str
) -> DocumentsDecision:
    """Decide every document and every picture that is part of one (see the module docstring), from the
    items that reached the split and every reject so far. Writes DECISION_SCHEMA rows to `out_uri`."""
    columns = ["sample_id", "modality", "texts", "segments", "part_of"]
    items = {r["sample_id"]: r for u in shard_uris for r in storage.read_parquet(u, columns=columns).to_pylist()}
    fates = _fates_of_pictures(reject_uris)

    def kept_as(image: str) -> tuple[str | None, str, str | None]:
        """The item that holds this picture now, or None and why it went (a copy of a picture an earlier
        version published: `duplicate:published`, its bytes are not in this version)."""
        why, seen = ("document:image_missing", "the picture's item is nowhere", None), set()
        while image not in items and image in fates and image not in seen:
            seen.add(image)
            why = fates[image]
            if not why[2]:
                break
            image = why[2]  # a copy: the item kept in its place (itself maybe a copy of another)
        return (image, "", None) if image in items else (None, why[0], why[1])

    decisions, used = [], set()
    for sample_id, item in items.items():
        if not KINDS[item["modality"]].composite:
            continue
        segments, dropped = [], []
        passages = {t["text"] for t in item["texts"] or []}  # what the filter left (boilerplate goes)
        for segment in item["segments"] or []:
            if segment["image"] is None:
                if segment["text"] in passages:
                    segments.append(segment)
                continue
            holder, reason, detail = kept_as(segment["image"])
            if holder is None:
                dropped.append([segment["image"], reason, detail])
            else:
                segments.append({"text": None, "image": holder})
        reason, detail = _judge(segments, dropped, config)
        if reason is None:
            used.update(s["image"] for s in segments if s["image"])
        decisions.append(
            {
                "sample_id": sample_id,
                "segments_json": None if reason else json.dumps(segments),
                "dropped_json": json.dumps(dropped) if dropped else None,
                "reason": reason,
                "detail": detail,
            }
        )
    orphans = _orphans(items, used)
    table = table_of(decisions + orphans, DECISION_SCHEMA)
    storage.write_parquet(out_uri, table)
    return DocumentsDecision(
        uri=out_uri,
        documents=len(decisions),
        documents_rejected=sum(1 for d in decisions if d["reason"]),
        images_dropped=sum(len(json.loads(d["dropped_json"])) for d in decisions if d["dropped_json"]),
        orphan_images=len(orphans),
    )


def _judge(segments: list[dict], dropped: list, config: FilterConfig) -> tuple[str | None, str | None]:
    """A document's reject reason and detail by the document rules, or (None, None)."""
    images = sum(1 for s in segments if s["image"])
    total = images + len(dropped)
    words = sum(len(s["text"].split()) for s in segments if s["text"])
    if images == 0:
        return "document:no_images", f"{total} picture(s), none left" if total else "no pictures"
    if images < config.min_document_images:
        return "filter:few_images", f"{images} picture(s) < {config.min_document_images}"
    if images > config.max_document_images:
        return "filter:many_images", f"{images} pictures > {config.max_document_images}"
    if words < config.min_document_words:
        return "filter:short_document", f"{words} words < {config.min_document_words}"
    if dropped and len(dropped) / total > config.max_document_images_dropped:
        share, most = len(dropped) / total, config.max_document_images_dropped
        return "filter:images_dropped", f"{share:.0%} of its pictures dropped > {most:.0%}"
    return None, None


class ApplyDocuments(Strict):
    decision_uri: str  # what resolve_documents wrote


class DocumentStage(RowStage):
    """Apply the documents decision to a shard: resolved segments, dropped pictures, rejects."""

    name = "documents"
    Config = ApplyDocuments
    reads = frozenset({"segments", "part_of", "texts"})
    writes = frozenset({"segments"})

    def setup(self) -> None:
        table = storage.read_parquet(self.config.decision_uri)
        self.decision = {r["sample_id"]: r for r in table.to_pylist()}

    def check(self, row: dict):
        decided = self.decision.get(row["sample_id"])
        if decided is None:
            return row
        if decided["reason"]:
            return Reject(decided["reason"], decided["detail"])
        for image, reason, detail in json.loads(decided["dropped_json"] or "[]"):
            self.drop_text(row, {"text": image, "kind": "image", "source": row["source"]}, reason, detail)
        return {**row, "segments": json.loads(decided["segments_json"])}
