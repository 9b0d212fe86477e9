"""What the interleaved-document adapters share: a document as Rows. Each image of a document is a Row
of its own (an image item: fetched, cleaned and deduplicated as images are, one item however many
documents show it), marked as part of the document; then the document's Row: its texts (kind
passage) and its segments in order, each a text of it or an image by key. All rows of a document
are one group, so a document and its pictures (and every other document showing them) share a split."""

from __future__ import annotations

from collections.abc import Iterator

from .base import Row, Source


def document_rows(
    source: Source, number: int, key: str, parts: list[tuple[str, str]], meta: dict | None
) -> Iterator[Row]:
    """Rows of one document from its parts in reading order: ("text", passage) or ("image", path or URL)."""
    texts, segments = [], []
    for kind, value in parts:
        if kind == "text":
            segments.append(("text", len(texts)))
            texts.append({"text": value, "kind": "passage"})
        else:
            segments.append(("image", value))
            yield Row(number, key=value, media=source.media_uri(value), modality="image", group=key, part_of=key)
    yield Row(number, key=key, modality="document", texts=texts, segments=segments, group=key, meta=meta)
