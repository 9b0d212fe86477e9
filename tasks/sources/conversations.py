"""Image conversations: ShareGPT4V, LLaVA-Instruct-150K and ALLaVA JSON (a list of {"id", "image",
"conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": ...}]}). The
answers (gpt / assistant turns) are the image's texts (kind answer); the prompts (human / user turns,
the `<image>` token taken out) are kept as texts of kind prompt. Records naming one image are one item;
a record without an image (a text-only conversation) is a bad row."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from .base import Row, Source, caption

ROLES = {"gpt": "answer", "assistant": "answer", "human": "prompt", "user": "prompt"}


def turn_texts(turns) -> list[dict]:
    texts = []
    for turn in turns if isinstance(turns, list) else []:
        kind = ROLES.get(turn.get("from") or turn.get("role")) if isinstance(turn, dict) else None
        value = turn.get("value", turn.get("content")) if kind else None
        if kind == "prompt" and isinstance(value, str):
            value = value.replace("<image>", "").strip()
        texts += caption(value, kind) if kind else []
    return texts


class Conversations(Source):
    kind: Literal["conversations"]

    def rows(self) -> Iterator[Row]:
        for number, record, error in self.read_records():
            image = record.get("image") if record else None
            if error or not isinstance(image, str) or not image:
                yield Row(number, error=error or "record without an 'image' (a text-only conversation)")
                continue
            texts = turn_texts(record.get("conversations"))
            if not any(t["kind"] == "answer" for t in texts):
                texts = [t for t in texts if t["kind"] == "answer"]  # prompts alone describe nothing: text:empty
            meta = {"conversation_id": record["id"]} if record.get("id") is not None else None
            yield Row(number, key=image, media=self.media_uri(image), modality="image", texts=texts, meta=meta)
