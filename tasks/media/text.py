"""Caption text: normalization shared by clean, filter and dedupe."""

from __future__ import annotations

import re
import unicodedata

_SPACE = re.compile(r"\s+")


def normalize_caption(text: str | None) -> str:
    """NFC, no control characters, single spaces, trimmed."""
    if not text:
        return ""
    text = unicodedata.normalize("NFC", text)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return _SPACE.sub(" ", text).strip()


def word_count(text: str | None) -> int:
    return len(normalize_caption(text).split())


def unique_texts(texts: list[dict]) -> tuple[list[dict], list[tuple[dict, str]]]:
    """An item's texts normalized, without empty ones and repeats (same kind, and the same caption up
    to case and spacing); returns (kept, [(dropped text, reason)])."""
    kept, dropped, seen = [], [], set()
    for text in texts:
        clean = normalize_caption(text["text"])
        key = (text["kind"], clean.casefold())
        if not clean:
            dropped.append((text, "text:empty"))
        elif key in seen:
            dropped.append((text, "text:duplicate"))
        else:
            seen.add(key)
            kept.append({**text, "text": clean})
    return kept, dropped
